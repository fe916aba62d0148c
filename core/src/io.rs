//! Frame drivers over `embedded-io` (blocking) and `embedded-io-async`.
//!
//! A [`FrameReader`] / [`AsyncFrameReader`] owns a transport and borrows
//! nothing: the caller hands it a header buffer and a receive buffer. Call
//! order per frame: `read_frame` (returns the checked header), then
//! `read_body` until it returns 0 (each call fills the caller's chunk
//! buffer; body bytes go straight from the transport into it when nothing is
//! buffered), then [`FrameReader::tag`] for a sealed frame. Calling
//! `read_frame` again skips whatever is left of the current body.
//!
//! Writing is stateless: [`write_head`] then the body bytes, or
//! [`write_frame`] for a frame with an in-memory body.

use core::fmt;

use crate::codec::{encode_head, DecodeError, Decoder, Event, Frame, Limits};
use crate::message::{EncodeError, Header};
use crate::wire::{Flags, TAG_LEN};

/// An error from a frame driver: the transport's, or the protocol's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FrameError<E> {
    /// The transport failed.
    Io(E),
    /// The peer closed the connection between frames.
    Closed,
    /// The peer closed the connection in the middle of a frame.
    UnexpectedEof,
    /// The bytes received are not a valid frame.
    Decode(DecodeError),
    /// A frame could not be encoded.
    Encode(EncodeError),
    /// The transport accepted no bytes (`write` returned 0).
    WriteZero,
}

impl<E: fmt::Debug> fmt::Display for FrameError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "transport error: {e:?}"),
            FrameError::Closed => write!(f, "connection closed by peer"),
            FrameError::UnexpectedEof => write!(f, "connection closed in the middle of a frame"),
            FrameError::Decode(e) => write!(f, "{e}"),
            FrameError::Encode(e) => write!(f, "{e}"),
            FrameError::WriteZero => write!(f, "transport accepted no bytes"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for FrameError<E> {}

impl<E> From<DecodeError> for FrameError<E> {
    fn from(e: DecodeError) -> Self {
        FrameError::Decode(e)
    }
}

impl<E> From<EncodeError> for FrameError<E> {
    fn from(e: EncodeError) -> Self {
        FrameError::Encode(e)
    }
}

/// What the receive state needs next.
enum Step {
    /// A header is ready.
    Header,
    /// `n` body bytes were copied to the caller's buffer (0: frame complete).
    Body(usize),
    /// The receive buffer is empty: read more.
    NeedInput,
}

/// Transport-independent receive state shared by both readers.
#[derive(Debug)]
struct Rx<H, X> {
    dec: Decoder<H>,
    buf: X,
    start: usize,
    end: usize,
    in_frame: bool,
    tag: Option<[u8; TAG_LEN]>,
}

impl<H: AsRef<[u8]> + AsMut<[u8]>, X: AsRef<[u8]> + AsMut<[u8]>> Rx<H, X> {
    fn new(header_buf: H, rx_buf: X, limits: Limits) -> Self {
        Rx {
            dec: Decoder::new(header_buf, limits),
            buf: rx_buf,
            start: 0,
            end: 0,
            in_frame: false,
            tag: None,
        }
    }

    /// Feed buffered bytes until a header is ready, skipping any unread body.
    fn pump_header(&mut self) -> Result<Step, DecodeError> {
        loop {
            let (n, r) = self
                .dec
                .handle_bytes(&self.buf.as_ref()[self.start..self.end]);
            self.start += n;
            match r? {
                Some(Event::Header(_)) => {
                    self.in_frame = true;
                    self.tag = None;
                    return Ok(Step::Header);
                }
                Some(Event::Body(_)) => {}
                Some(Event::End { .. }) => self.in_frame = false,
                None => {
                    self.start = 0;
                    self.end = 0;
                    return Ok(Step::NeedInput);
                }
            }
        }
    }

    /// Copy buffered body bytes into `out` (or report the end, or a need for input).
    fn pump_body(&mut self, out: &mut [u8]) -> Result<Step, DecodeError> {
        if !self.in_frame || out.is_empty() {
            return Ok(Step::Body(0));
        }
        let end = self.end.min(self.start + out.len().max(1));
        let (n, r) = self.dec.handle_bytes(&self.buf.as_ref()[self.start..end]);
        self.start += n;
        match r? {
            Some(Event::Body(b)) => {
                let k = b.len().min(out.len());
                out[..k].copy_from_slice(&b[..k]);
                Ok(Step::Body(k))
            }
            Some(Event::End { tag }) => {
                self.in_frame = false;
                self.tag = tag;
                Ok(Step::Body(0))
            }
            // Unreachable while in a frame; a new frame ends this body.
            Some(Event::Header(_)) => Ok(Step::Header),
            None => {
                if self.start >= self.end {
                    self.start = 0;
                    self.end = 0;
                }
                Ok(Step::NeedInput)
            }
        }
    }

    /// Feed bytes read straight into the caller's buffer (all body bytes).
    fn direct(&mut self, data: &[u8]) -> Result<usize, DecodeError> {
        let (n, r) = self.dec.handle_bytes(data);
        match r? {
            Some(Event::Body(b)) => Ok(b.len()),
            // `direct` is only used with at most body_remaining bytes.
            _ => Ok(n),
        }
    }

    /// Where to read body bytes directly: `Some(max)` when nothing is buffered
    /// and body bytes remain.
    fn direct_room(&self, out_len: usize) -> Option<usize> {
        let left = self.dec.body_remaining();
        (self.start == self.end && left > 0).then(|| (left.min(out_len as u64)) as usize)
    }

    fn frame(&self) -> Option<Frame<'_>> {
        self.dec.frame()
    }
}

macro_rules! reader_doc {
    () => {
        "Reads frames from a transport; see the [module documentation](self) for the call order."
    };
}

#[doc = reader_doc!()]
#[derive(Debug)]
pub struct FrameReader<R, H, X> {
    io: R,
    rx: Rx<H, X>,
}

#[doc = reader_doc!()]
#[derive(Debug)]
pub struct AsyncFrameReader<R, H, X> {
    io: R,
    rx: Rx<H, X>,
}

macro_rules! common_reader_methods {
    () => {
        /// Wrap `io`, decoding headers into `header_buf` and buffering reads in `rx_buf`.
        pub fn new(io: R, header_buf: H, rx_buf: X, limits: Limits) -> Self {
            Self {
                io,
                rx: Rx::new(header_buf, rx_buf, limits),
            }
        }
        /// Change the limits (after Hello).
        pub fn set_limits(&mut self, limits: Limits) {
            self.rx.dec.set_limits(limits);
        }
        /// The limits in force.
        pub fn limits(&self) -> Limits {
            self.rx.dec.limits()
        }
        /// Accept ENCRYPTED frames (see [`Decoder::set_encryption`]).
        pub fn set_encryption(&mut self, on: bool) {
            self.rx.dec.set_encryption(on);
        }
        /// The tag of the last completed sealed frame.
        pub fn tag(&self) -> Option<[u8; TAG_LEN]> {
            self.rx.tag
        }
        /// The current frame (after `read_frame`, until its end).
        pub fn frame(&self) -> Option<Frame<'_>> {
            self.rx.frame()
        }
        /// Body bytes of the current frame not yet read.
        pub fn body_remaining(&self) -> u64 {
            self.rx.dec.body_remaining()
        }
        /// The transport.
        pub fn get_mut(&mut self) -> &mut R {
            &mut self.io
        }
        /// Give back the transport.
        pub fn into_inner(self) -> R {
            self.io
        }
    };
}

impl<R: embedded_io::Read, H: AsRef<[u8]> + AsMut<[u8]>, X: AsRef<[u8]> + AsMut<[u8]>>
    FrameReader<R, H, X>
{
    common_reader_methods!();

    fn fill(&mut self, mid_frame: bool) -> Result<(), FrameError<R::Error>> {
        let buf = self.rx.buf.as_mut();
        let n = self
            .io
            .read(&mut buf[self.rx.end..])
            .map_err(FrameError::Io)?;
        if n == 0 {
            return Err(if mid_frame {
                FrameError::UnexpectedEof
            } else {
                FrameError::Closed
            });
        }
        self.rx.end += n;
        Ok(())
    }

    /// Read up to the next frame's header (skipping the rest of the current frame).
    pub fn read_frame(&mut self) -> Result<Frame<'_>, FrameError<R::Error>> {
        loop {
            match self.rx.pump_header()? {
                Step::Header => break,
                _ => {
                    let mid = !self.rx.dec.is_idle();
                    self.fill(mid)?
                }
            }
        }
        self.rx
            .frame()
            .ok_or(FrameError::Decode(DecodeError::EmptyHeader))
    }

    /// Read body bytes of the current frame into `out`; 0 means the frame is
    /// complete (and `out` was not empty).
    pub fn read_body(&mut self, out: &mut [u8]) -> Result<usize, FrameError<R::Error>> {
        loop {
            if let Some(room) = self.rx.direct_room(out.len()) {
                let n = self.io.read(&mut out[..room]).map_err(FrameError::Io)?;
                if n == 0 {
                    return Err(FrameError::UnexpectedEof);
                }
                return Ok(self.rx.direct(&out[..n])?);
            }
            match self.rx.pump_body(out)? {
                Step::Body(n) => return Ok(n),
                Step::Header => return Ok(0),
                Step::NeedInput => self.fill(true)?,
            }
        }
    }

    /// Read and discard the rest of the current frame's body.
    pub fn skip_body(&mut self) -> Result<(), FrameError<R::Error>> {
        let mut scratch = [0u8; 64];
        while self.read_body(&mut scratch)? > 0 {}
        Ok(())
    }
}

impl<R: embedded_io_async::Read, H: AsRef<[u8]> + AsMut<[u8]>, X: AsRef<[u8]> + AsMut<[u8]>>
    AsyncFrameReader<R, H, X>
{
    common_reader_methods!();

    async fn fill(&mut self, mid_frame: bool) -> Result<(), FrameError<R::Error>> {
        let buf = self.rx.buf.as_mut();
        let n = self
            .io
            .read(&mut buf[self.rx.end..])
            .await
            .map_err(FrameError::Io)?;
        if n == 0 {
            return Err(if mid_frame {
                FrameError::UnexpectedEof
            } else {
                FrameError::Closed
            });
        }
        self.rx.end += n;
        Ok(())
    }

    /// Read up to the next frame's header (skipping the rest of the current frame).
    pub async fn read_frame(&mut self) -> Result<Frame<'_>, FrameError<R::Error>> {
        loop {
            match self.rx.pump_header()? {
                Step::Header => break,
                _ => {
                    let mid = !self.rx.dec.is_idle();
                    self.fill(mid).await?
                }
            }
        }
        self.rx
            .frame()
            .ok_or(FrameError::Decode(DecodeError::EmptyHeader))
    }

    /// Read body bytes of the current frame into `out`; 0 means the frame is
    /// complete (and `out` was not empty).
    pub async fn read_body(&mut self, out: &mut [u8]) -> Result<usize, FrameError<R::Error>> {
        loop {
            if let Some(room) = self.rx.direct_room(out.len()) {
                let n = self
                    .io
                    .read(&mut out[..room])
                    .await
                    .map_err(FrameError::Io)?;
                if n == 0 {
                    return Err(FrameError::UnexpectedEof);
                }
                return Ok(self.rx.direct(&out[..n])?);
            }
            match self.rx.pump_body(out)? {
                Step::Body(n) => return Ok(n),
                Step::Header => return Ok(0),
                Step::NeedInput => self.fill(true).await?,
            }
        }
    }

    /// Read and discard the rest of the current frame's body.
    pub async fn skip_body(&mut self) -> Result<(), FrameError<R::Error>> {
        let mut scratch = [0u8; 64];
        while self.read_body(&mut scratch).await? > 0 {}
        Ok(())
    }
}

/// Write a frame's prefix and header (encoded in `scratch`); the caller then
/// writes exactly `body_len` body bytes.
pub fn write_head<W: embedded_io::Write>(
    w: &mut W,
    header: &Header<'_>,
    body_len: u64,
    flags: Flags,
    scratch: &mut [u8],
) -> Result<(), FrameError<W::Error>> {
    let head = encode_head(header, body_len, flags, scratch)?;
    write_all(w, head)
}

/// Write a whole frame with an in-memory body.
pub fn write_frame<W: embedded_io::Write>(
    w: &mut W,
    header: &Header<'_>,
    body: &[u8],
    scratch: &mut [u8],
) -> Result<(), FrameError<W::Error>> {
    write_head(w, header, body.len() as u64, Flags::empty(), scratch)?;
    write_all(w, body)
}

fn write_all<W: embedded_io::Write>(
    w: &mut W,
    mut data: &[u8],
) -> Result<(), FrameError<W::Error>> {
    while !data.is_empty() {
        match w.write(data).map_err(FrameError::Io)? {
            0 => return Err(FrameError::WriteZero),
            n => data = &data[n..],
        }
    }
    Ok(())
}

/// Async [`write_head`].
pub async fn write_head_async<W: embedded_io_async::Write>(
    w: &mut W,
    header: &Header<'_>,
    body_len: u64,
    flags: Flags,
    scratch: &mut [u8],
) -> Result<(), FrameError<W::Error>> {
    let head = encode_head(header, body_len, flags, scratch)?;
    w.write_all(head).await.map_err(FrameError::Io)
}

/// Async [`write_frame`].
pub async fn write_frame_async<W: embedded_io_async::Write>(
    w: &mut W,
    header: &Header<'_>,
    body: &[u8],
    scratch: &mut [u8],
) -> Result<(), FrameError<W::Error>> {
    write_head_async(w, header, body.len() as u64, Flags::empty(), scratch).await?;
    w.write_all(body).await.map_err(FrameError::Io)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::message::Message;
    extern crate std;
    use std::vec::Vec;

    /// A transport that returns at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }
    impl embedded_io::ErrorType for Trickle<'_> {
        type Error = core::convert::Infallible;
    }
    impl embedded_io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            let n = self.data.len().min(buf.len()).min(self.step);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn stream() -> Vec<u8> {
        let mut out = Vec::new();
        let mut scratch = [0u8; 128];
        let body: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        write_frame(
            &mut out,
            &Header::new(
                1,
                Message::Output {
                    stream: crate::Stream::Stdout,
                },
            ),
            &body,
            &mut scratch,
        )
        .unwrap();
        write_frame(
            &mut out,
            &Header::new(
                1,
                Message::Exit {
                    status: crate::ExitStatus::Code(3),
                },
            ),
            &[],
            &mut scratch,
        )
        .unwrap();
        write_frame(
            &mut out,
            &Header::new(2, Message::Data),
            b"skipped",
            &mut scratch,
        )
        .unwrap();
        write_frame(
            &mut out,
            &Header::new(3, Message::Pong { stamp: 5 }),
            &[],
            &mut scratch,
        )
        .unwrap();
        out
    }

    #[test]
    fn reader_streams_bodies_for_any_read_and_chunk_size() {
        let data = stream();
        for step in [1, 7, 64, 4096, 100_000] {
            for chunk in [1, 3, 1000, 8192] {
                let mut r = FrameReader::new(
                    Trickle { data: &data, step },
                    [0u8; 64],
                    [0u8; 256],
                    Limits {
                        max_header: 64,
                        max_body: 8192,
                    },
                );
                let f = r.read_frame().unwrap();
                assert_eq!(f.parse().unwrap().message.kind(), crate::Kind::Output);
                let mut body = Vec::new();
                let mut buf = std::vec![0u8; chunk];
                loop {
                    let n = r.read_body(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&buf[..n]);
                }
                assert_eq!(body.len(), 5000);
                assert!(body.iter().enumerate().all(|(i, &b)| b == i as u8));
                let f = r.read_frame().unwrap();
                assert_eq!(
                    f.parse().unwrap().message,
                    Message::Exit {
                        status: crate::ExitStatus::Code(3)
                    }
                );
                r.read_frame().unwrap(); // Data, body left unread
                let f = r.read_frame().unwrap();
                assert_eq!(
                    f.parse().unwrap(),
                    Header::new(3, Message::Pong { stamp: 5 })
                );
                assert_eq!(r.read_body(&mut buf).unwrap(), 0);
                assert_eq!(r.read_frame().unwrap_err(), FrameError::Closed);
            }
        }
    }

    #[test]
    fn eof_mid_frame_is_reported() {
        let data = stream();
        let mut r = FrameReader::new(
            Trickle {
                data: &data[..30],
                step: 9,
            },
            [0u8; 64],
            [0u8; 16],
            Limits {
                max_header: 64,
                max_body: 8192,
            },
        );
        r.read_frame().unwrap();
        let mut buf = [0u8; 100];
        let mut err = None;
        for _ in 0..100 {
            match r.read_body(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert_eq!(err, Some(FrameError::UnexpectedEof));
    }
}

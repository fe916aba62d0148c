//! Input: decoding frames, checking their seal or opening them, and handing
//! them to [`dispatch`](super::dispatch) once they may be acted on.
//!
//! * An unsealed frame (no key, or during the handshake) is dispatched at
//!   its header; its body follows (upload data goes to the backend).
//! * A sealed frame is dispatched at its end, once its tag verified;
//!   upload data streams to the backend as it arrives (only a verified
//!   Done commits it).
//! * An encrypted frame is collected whole in the frame buffer, opened,
//!   then dispatched.
//!
//! A frame whose reply does not fit the staging queue is held: no more
//! input is taken until it could be dispatched. So is a Data or Done
//! frame (before its body) for a Put that waits for the backend to create
//! its upload: the Put is answered (PutReady or Error) before its data is
//! read, so a client may send its Data without waiting, on a slow backend
//! as on a quick one, while other requests' frames before it go on.

use crate::codec::{DecodeError, Event, Frame, Limits};
use crate::handshake::{Opener, TagBuilder};
use crate::message::{ErrorCode, Header, Message};
use crate::text::text;
use crate::wire::PrefixRepr;

use super::backend::{Backend, Count};
use super::dispatch::RawFrame;
use super::slot::{Op, Put, PutFault, PutPhase};
use super::tx::{Security, Staging};
use super::{Phase, ServerConn, State};

/// Where the current frame's body goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// Nowhere (it only feeds the tag, if any).
    Skip,
    /// Upload data of the request in this slot.
    Put(usize),
    /// Into the frame buffer (an encrypted frame).
    Collect,
}

/// A frame waiting to be dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    None,
    /// The decoder's current frame (unsealed, at its header).
    Header,
    /// The decoder's last ended frame (sealed, tag verified).
    End,
    /// The opened frame in the frame buffer: header and body lengths.
    Opened(usize, usize),
}

/// Receive state of the frame in progress.
#[derive(Debug)]
pub(super) struct Rx {
    pub held: Held,
    pub route: Route,
    /// The tag being computed over the sealed frame being received: while
    /// it is `Some`, nothing is said about that frame.
    pub tag: Option<TagBuilder>,
    /// Dispatch the sealed frame at its end.
    pub at_end: bool,
    /// The encrypted frame being collected: its prefix, and the bytes
    /// (header first) in the frame buffer so far, `None` until the header
    /// was copied there.
    pub collect: Option<(PrefixRepr, Option<usize>)>,
    /// Limits and encryption for the decoder, set by the handshake.
    pub decoder: Option<(Limits, bool)>,
}

impl Rx {
    pub(super) fn new() -> Self {
        Rx {
            held: Held::None,
            route: Route::Skip,
            tag: None,
            at_end: false,
            collect: None,
            decoder: None,
        }
    }

    /// The frame buffer size the frame being collected needs.
    pub(super) fn frame_need(&self) -> Option<usize> {
        let (repr, _) = self.collect?;
        Some(usize::from(repr.header_len) + repr.body_len as usize)
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>, const N: usize> ServerConn<B, N> {
    /// Feed received bytes; returns how many were consumed. Fewer than
    /// `input.len()` means the engine waits: for room to reply (call
    /// [`poll_transmit`](Self::poll_transmit), then offer the rest again),
    /// or for a frame buffer ([`wants_frame_buffer`](Self::wants_frame_buffer)).
    pub fn handle_bytes<K: Backend>(&mut self, now: u64, input: &[u8], bk: &mut K) -> usize {
        let mut used = 0;
        loop {
            if matches!(self.st.phase, Phase::Closed | Phase::Closing) {
                used = input.len();
                break;
            }
            if self.st.rx.held != Held::None {
                if !self.dispatch_held(now, bk) {
                    break;
                }
                continue;
            }
            // A sealed Data frame's body waits until its Put is answered.
            if let Route::Put(i) = self.st.rx.route {
                if !self.st.created(i, &mut self.staging, bk) {
                    break;
                }
            }
            if !self.start_collect() {
                break;
            }
            let (n, event) = self.dec.handle_bytes(&input[used..]);
            used += n;
            let st = &mut self.st;
            match event {
                Ok(None) => break,
                Ok(Some(Event::Header(f))) => st.on_header(f, &mut self.staging, bk),
                Ok(Some(Event::Body(b))) => st.on_body(b, &mut self.frame, bk),
                Ok(Some(Event::End { tag })) => {
                    st.on_end(tag, &mut self.frame, &mut self.staging, bk)
                }
                Err(e) => {
                    st.decode_failed(e, &mut self.staging, bk);
                    used = input.len();
                    break;
                }
            }
        }
        if used > 0 {
            bk.count(Count::BytesIn(used as u64));
            // While closing, input is thrown away: it must not hold the
            // close grace open (only bytes sent do, delivering the Error).
            if self.st.phase != Phase::Closing {
                self.st.active_ms = now;
            }
        }
        used
    }

    /// Dispatch the held frame if there is room; returns whether it did.
    pub(super) fn dispatch_held<K: Backend>(&mut self, now: u64, bk: &mut K) -> bool {
        let st = &mut self.st;
        let raw = match st.rx.held {
            Held::None => return true,
            Held::Header => self.dec.frame().map(RawFrame::streaming),
            Held::End => self.dec.ended_frame().map(RawFrame::streaming),
            Held::Opened(h, b) => {
                let repr = st.rx.collect.map(|(r, _)| r);
                match (&self.frame, repr) {
                    (Some(buf), Some(prefix)) => Some(RawFrame {
                        prefix,
                        header: &buf.as_ref()[..h],
                        body: Some(&buf.as_ref()[h..h + b]),
                    }),
                    _ => None,
                }
            }
        };
        let Some(raw) = raw else {
            st.rx.held = Held::None;
            return true;
        };
        if !st.dispatch(raw, &mut self.staging, now, bk) {
            return false;
        }
        if matches!(st.rx.held, Held::Opened(..)) {
            st.rx.collect = None;
        }
        st.rx.held = Held::None;
        if let Some((limits, encryption)) = st.rx.decoder.take() {
            self.dec.set_limits(limits);
            self.dec.set_encryption(encryption);
        }
        true
    }

    /// An encrypted frame's header arrived: copy it to the frame buffer
    /// first (returns false while there is none big enough).
    fn start_collect(&mut self) -> bool {
        let Some((repr, None)) = self.st.rx.collect else {
            return true;
        };
        let need = usize::from(repr.header_len) + repr.body_len as usize;
        let (Some(buf), Some(f)) = (self.frame.as_mut(), self.dec.frame()) else {
            return false;
        };
        let Some(dst) = buf.as_mut().get_mut(..need) else {
            return false;
        };
        dst[..f.header.len()].copy_from_slice(f.header);
        self.st.rx.collect = Some((repr, Some(f.header.len())));
        true
    }
}

impl<const N: usize> State<N> {
    fn on_header<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        f: Frame<'_>,
        tx: &mut Staging<B>,
        bk: &mut K,
    ) {
        bk.count(Count::FrameIn);
        self.rx.route = Route::Skip;
        self.rx.at_end = false;
        let Security::Sealed(keys) = &mut self.sec else {
            self.rx.held = Held::Header;
            return;
        };
        if let Some(why) = keys.protection_fault(f.prefix.flags) {
            return self.integrity(tx, why, bk);
        }
        if keys.encrypted() {
            self.rx.route = Route::Collect;
            self.rx.collect = Some((f.prefix, None));
            return;
        }
        self.rx.tag = Some(keys.open.begin_frame(&f));
        match self.upload_of(f.header) {
            Some(i) => self.rx.route = Route::Put(i),
            None => self.rx.at_end = true,
        }
    }

    /// Whether upload `i` is past its create (answered PutReady or Error);
    /// a pending create is polled once more first.
    pub(super) fn created<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        i: usize,
        tx: &mut Staging<B>,
        bk: &mut K,
    ) -> bool {
        let creating = |s: &super::slot::Slot| {
            matches!(
                s.op,
                Op::Put(Put {
                    phase: PutPhase::Create,
                    ..
                })
            )
        };
        if creating(&self.table.slots[i]) {
            self.kick(i, tx, bk);
        }
        !creating(&self.table.slots[i])
    }

    /// The slot of the Put a Data or Done header is for, if that is a Put
    /// in progress.
    pub(super) fn upload_target(&self, header: &[u8]) -> Option<usize> {
        let h = Header::parse(header).ok()?;
        if !matches!(h.message, Message::Data | Message::Done { .. }) {
            return None;
        }
        let i = self.table.find(h.request_id)?;
        matches!(self.table.slots[i].op, Op::Put(_)).then_some(i)
    }

    /// The slot of the upload whose data this header announces, if it is
    /// receiving.
    pub(super) fn upload_of(&self, header: &[u8]) -> Option<usize> {
        let h = Header::parse(header).ok()?;
        if h.message != Message::Data {
            return None;
        }
        let i = self.table.find(h.request_id)?;
        matches!(
            self.table.slots[i].op,
            Op::Put(Put {
                phase: PutPhase::Receiving | PutPhase::Create,
                ..
            })
        )
        .then_some(i)
    }

    fn on_body<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        b: &[u8],
        frame: &mut Option<B>,
        bk: &mut K,
    ) {
        if let Some(t) = self.rx.tag.as_mut() {
            t.update(b);
        }
        match self.rx.route {
            Route::Skip => {}
            Route::Put(i) => self.upload_data(i, b, bk),
            Route::Collect => {
                if let (Some((_, Some(at))), Some(buf)) = (&mut self.rx.collect, frame.as_mut()) {
                    if let Some(dst) = buf.as_mut().get_mut(*at..*at + b.len()) {
                        dst.copy_from_slice(b);
                        *at += b.len();
                    }
                }
            }
        }
    }

    /// Upload bytes for slot `i`: hash them and hand them to the backend.
    pub(super) fn upload_data<K: Backend>(&mut self, i: usize, b: &[u8], bk: &mut K) {
        let req = self.table.req(i);
        let Op::Put(put) = &mut self.table.slots[i].op else {
            return;
        };
        // An empty Data frame (whole, as an opened encrypted frame is) has
        // nothing to write.
        if put.phase != PutPhase::Receiving || b.is_empty() {
            return;
        }
        if put.got + b.len() as u64 > put.size {
            put.phase = PutPhase::Fault(PutFault::Overflow);
            self.rx.route = Route::Skip;
            return;
        }
        sha2::Digest::update(&mut put.hasher, b);
        if let Err(f) = bk.write(req, put.got, b) {
            put.phase = PutPhase::Fault(PutFault::Write(f.code));
            self.rx.route = Route::Skip;
            return;
        }
        put.got += b.len() as u64;
    }

    fn on_end<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        tag: Option<[u8; crate::wire::TAG_LEN]>,
        frame: &mut Option<B>,
        tx: &mut Staging<B>,
        bk: &mut K,
    ) {
        self.rx.route = Route::Skip;
        if let Some(builder) = self.rx.tag.take() {
            if !tag.is_some_and(|t| Opener::verify(builder, &t)) {
                return self.integrity(
                    tx,
                    "a frame failed its integrity check (replayed, reordered, altered or cut)",
                    bk,
                );
            }
            if self.rx.at_end {
                self.rx.held = Held::End;
            }
            return;
        }
        let Some((repr, Some(len))) = self.rx.collect else {
            return;
        };
        let (Security::Sealed(keys), Some(buf), Some(tag)) = (&mut self.sec, frame.as_mut(), tag)
        else {
            return;
        };
        let Some(cipher) = keys.decrypt.as_mut() else {
            return;
        };
        let Some(data) = buf.as_mut().get_mut(..len) else {
            return;
        };
        if !cipher.open_in_place(&repr, data, &tag) {
            return self.integrity(
                tx,
                "a frame does not decrypt (replayed, reordered, altered or cut)",
                bk,
            );
        }
        let h = usize::from(repr.header_len);
        self.rx.held = Held::Opened(h, len - h);
    }

    fn integrity<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        tx: &mut Staging<B>,
        why: &str,
        bk: &mut K,
    ) {
        bk.count(Count::IntegrityFailure);
        let t = text(format_args!("{why}; closing"));
        self.fatal(tx, 0, ErrorCode::INTEGRITY, t.as_str(), bk);
    }

    fn decode_failed<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        e: DecodeError,
        tx: &mut Staging<B>,
        bk: &mut K,
    ) {
        bk.count(Count::BadFrame);
        let t = text(format_args!("{e}; closing the connection"));
        self.fatal(tx, 0, e.code(), t.as_str(), bk);
    }
}

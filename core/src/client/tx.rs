//! The client's output: requests into the staging queue, and upload data
//! framed at transmit time, read by the caller straight into place.

use core::task::Poll;

use sha2::{Digest as _, Sha256};

use crate::message::{Digest, ErrorCode, Exec, Header, Message};
use crate::outgoing::{self, Staging};
use crate::wire::PREFIX_LEN;

use super::event::{Event, Origin, ReqId, Request, RequestError, Uploads};
use super::slot::{Get, GetPhase, Op, Put, PutPhase, Slot};
use super::{Phase, State};

/// Room a transmit round needs in its output buffer to frame upload data.
const MIN_DATA_ROOM: usize = 256;

impl<const N: usize> State<N> {
    /// Queue one frame in the staging queue.
    fn queue<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        tx: &mut Staging<B>,
        h: &Header<'_>,
    ) -> Result<(), RequestError> {
        let len = outgoing::control_len(self.keys.as_ref(), h);
        if h.buffer_len() > usize::from(self.server.max_header) {
            return Err(RequestError::TooLarge);
        }
        if !tx.has_room(len) {
            return Err(RequestError::NoRoom);
        }
        let n = outgoing::compose(self.keys.as_mut(), tx.free(), h).ok_or(RequestError::Invalid)?;
        tx.commit(n);
        Ok(())
    }

    pub(super) fn request<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        tx: &mut Staging<B>,
        r: Request<'_>,
    ) -> Result<ReqId, RequestError> {
        if self.phase != Phase::Open {
            return Err(RequestError::NotConnected);
        }
        let limit = usize::from(self.server.max_requests).clamp(1, N);
        // Ping, Echo and Time take no slot on the server, but one here.
        let (i, id) = self.table.take(limit.max(N)).ok_or(RequestError::Busy)?;
        if !matches!(
            r,
            Request::Ping { .. } | Request::Echo { .. } | Request::Time { .. }
        ) && self.server_requests() >= limit
        {
            return Err(RequestError::Busy);
        }
        let (msg, op) = match r {
            Request::Ping { stamp } => (Message::Ping { stamp }, Op::Ping),
            Request::Echo { text } => (Message::Echo { text }, Op::Echo),
            Request::Time { format } => (Message::Time { format }, Op::Time),
            Request::Exec {
                command,
                timeout_ms,
            } => (
                Message::Exec(Exec {
                    command,
                    timeout_ms,
                }),
                Op::Exec,
            ),
            Request::Stat { path } => (Message::Stat { path }, Op::Stat),
            Request::List { path } => (Message::List { path }, Op::List { count: 0 }),
            Request::Remove { path } => (Message::Remove { path }, Op::Remove),
            Request::Get { path, resume } => {
                let offset = resume.as_ref().map_or(0, |r| r.offset);
                let get = Get {
                    phase: GetPhase::Info(resume.map(|r| (r.offset, r.prefix))),
                    size: 0,
                    got: 0,
                    hasher: Sha256::new(),
                };
                (Message::Get { path, offset }, Op::Get(get))
            }
            Request::Put {
                path,
                size,
                force,
                resume,
            } => {
                let put = Put {
                    phase: PutPhase::Ready,
                    size,
                    pos: 0,
                    resume,
                    hasher: Sha256::new(),
                    sent: None,
                };
                (
                    Message::Put {
                        path,
                        size,
                        force,
                        resume,
                    },
                    Op::Put(put),
                )
            }
        };
        self.queue(tx, &Header::new(id, msg))?;
        self.table.slots[i] = Slot {
            id,
            wait: false,
            op,
        };
        Ok(self.table.req(i))
    }

    /// Queue the keepalive Ping (request id 0, stamped `now`); false when
    /// the queue has no room for it now.
    pub(super) fn probe<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        tx: &mut Staging<B>,
        now: u64,
    ) -> bool {
        self.queue(tx, &Header::new(0, Message::Ping { stamp: now }))
            .is_ok()
    }

    /// Requests that take a slot on the server.
    fn server_requests(&self) -> usize {
        self.table
            .slots
            .iter()
            .filter(|s| !matches!(s.op, Op::Free | Op::Ping | Op::Echo | Op::Time))
            .count()
    }

    pub(super) fn cancel<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        tx: &mut Staging<B>,
        req: ReqId,
    ) -> Result<(), RequestError> {
        if self
            .table
            .slots
            .get(usize::from(req.slot))
            .is_none_or(|s| s.is_free() || s.id != req.id)
        {
            return Ok(());
        }
        // The Cancel's own id is not looked at by the server.
        self.queue(tx, &Header::new(0, Message::Cancel { target: req.id }))
    }

    /// Fill `out` with queued frames, then with upload frames.
    pub(super) fn transmit<B: AsRef<[u8]> + AsMut<[u8]>, U: Uploads>(
        &mut self,
        tx: &mut Staging<B>,
        out: &mut [u8],
        uploads: &mut U,
    ) -> usize {
        let mut n = tx.drain(out);
        if tx.queued() > 0 || self.phase != Phase::Open {
            return n;
        }
        while out.len() - n >= MIN_DATA_ROOM {
            let k = self.round(tx, &mut out[n..], uploads);
            n += k;
            // A round may queue a frame (an upload's Done, a Cancel)
            // without writing data: it goes out in this call too, so that
            // 0 means there is nothing to send.
            n += tx.drain(&mut out[n..]);
            if k == 0 || tx.queued() > 0 {
                break;
            }
        }
        n
    }

    /// One frame from the first upload, from `turn` on, that has one.
    fn round<B: AsRef<[u8]> + AsMut<[u8]>, U: Uploads>(
        &mut self,
        tx: &mut Staging<B>,
        dst: &mut [u8],
        uploads: &mut U,
    ) -> usize {
        for k in 0..N {
            let i = (self.turn + k) % N;
            if !self.table.slots[i].wants_transmit() {
                continue;
            }
            let n = self.upload_step(i, tx, dst, uploads);
            if n > 0 {
                self.turn = (i + 1) % N;
                return n;
            }
        }
        0
    }

    /// The next frame of upload `i`: a Data frame into `dst`, or its Done
    /// (or a Cancel) into the staging queue. Returns bytes written to `dst`.
    fn upload_step<B: AsRef<[u8]> + AsMut<[u8]>, U: Uploads>(
        &mut self,
        i: usize,
        tx: &mut Staging<B>,
        dst: &mut [u8],
        uploads: &mut U,
    ) -> usize {
        let req = self.table.req(i);
        let Op::Put(p) = &mut self.table.slots[i].op else {
            return 0;
        };
        match p.phase {
            PutPhase::Prefix { offset, theirs } => match uploads.hash_prefix(req, offset) {
                Poll::Pending => self.table.slots[i].wait = true,
                Poll::Ready(Ok(h)) => {
                    let ours: Digest = h.clone().finalize().into();
                    if ours == theirs {
                        p.hasher = h;
                        p.pos = offset;
                        p.phase = PutPhase::Sending;
                        self.rx.pending = Some(super::rx::Pending::PutStarted(req, offset));
                    } else {
                        p.phase = PutPhase::Mismatch;
                        let _ = self.cancel(tx, req);
                    }
                }
                Poll::Ready(Err(f)) => {
                    let (code, text) = (f.code, crate::text::text(format_args!("{}", f.message)));
                    self.abandon(tx, i, code, text);
                }
            },
            PutPhase::Sending => {
                let k = self.upload_data(i, tx, dst, uploads);
                let checking = matches!(
                    &self.table.slots[i].op,
                    Op::Put(Put {
                        phase: PutPhase::Checking,
                        ..
                    })
                );
                // Every byte was sent before this call (or there were
                // none): check and queue Done now, not on a later call.
                if k > 0 || !checking || self.table.slots[i].wait {
                    return k;
                }
                return self.upload_step(i, tx, dst, uploads);
            }
            PutPhase::Checking => match uploads.check_unchanged(req) {
                Poll::Pending => self.table.slots[i].wait = true,
                Poll::Ready(Ok(())) => {
                    let digest: Digest = p.hasher.clone().finalize().into();
                    let h = Header::new(
                        req.id,
                        Message::Done {
                            bytes: p.size,
                            sha256: Some(digest),
                        },
                    );
                    if self.queue(tx, &h).is_ok() {
                        if let Op::Put(p) = &mut self.table.slots[i].op {
                            p.sent = Some(digest);
                            p.phase = PutPhase::Committing;
                        }
                    }
                }
                Poll::Ready(Err(f)) => {
                    let (code, text) = (f.code, crate::text::text(format_args!("{}", f.message)));
                    self.abandon(tx, i, code, text);
                }
            },
            _ => {}
        }
        0
    }

    /// One Data frame of upload `i`, read straight into `dst`.
    fn upload_data<B: AsRef<[u8]> + AsMut<[u8]>, U: Uploads>(
        &mut self,
        i: usize,
        tx: &mut Staging<B>,
        dst: &mut [u8],
        uploads: &mut U,
    ) -> usize {
        let req = self.table.req(i);
        let max = self.server.max_chunk as usize;
        let Op::Put(p) = &mut self.table.slots[i].op else {
            return 0;
        };
        if p.pos == p.size {
            p.phase = PutPhase::Checking;
            return 0;
        }
        let h = Header::new(req.id, Message::Data);
        let left = ((p.size - p.pos).min(max as u64)) as usize;
        let region = outgoing::body_region(self.keys.as_ref(), dst.len(), h.buffer_len(), left);
        if region.is_empty() {
            return 0;
        }
        match uploads.read(req, p.pos, &mut dst[region.clone()]) {
            Poll::Pending => {
                self.table.slots[i].wait = true;
                0
            }
            Poll::Ready(Ok(0)) => {
                let text = crate::text::text(format_args!(
                    "the file shrank while being sent; nothing was committed: run the put again"
                ));
                self.abandon(tx, i, ErrorCode::CHANGED, text);
                0
            }
            Poll::Ready(Ok(k)) => {
                let k = k.min(region.len());
                p.hasher.update(&dst[region.start..region.start + k]);
                p.pos += k as u64;
                if p.pos == p.size {
                    p.phase = PutPhase::Checking;
                }
                debug_assert!(region.start == PREFIX_LEN + h.buffer_len());
                outgoing::finish(self.keys.as_mut(), dst, &h, k)
            }
            Poll::Ready(Err(f)) => {
                let (code, text) = (f.code, crate::text::text(format_args!("{}", f.message)));
                self.abandon(tx, i, code, text);
                0
            }
        }
    }

    /// The caller's file failed: cancel the upload, say why once, and
    /// wait silently for its end.
    fn abandon<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        tx: &mut Staging<B>,
        i: usize,
        code: ErrorCode,
        text: crate::text::Text,
    ) {
        let req = self.table.req(i);
        if let Op::Put(p) = &mut self.table.slots[i].op {
            p.phase = PutPhase::Abandoned;
        }
        let _ = self.cancel(tx, req);
        self.rx.pending = Some(super::rx::Pending::Failed(req, Origin::Local, code, text));
    }

    /// An event made while transmitting, given by the next `handle_bytes`.
    #[allow(dead_code)]
    pub(super) fn has_pending(&self) -> bool {
        self.rx.pending.is_some()
    }
}

#[allow(dead_code)]
fn _event_used(_: Event<'_>) {}

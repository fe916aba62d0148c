//! Output: the transmit round (one frame from each request in turn), what
//! each request sends next, and the deadlines.

use core::task::Poll;

use sha2::Digest as _;

use crate::message::{Digest, ErrorCode, ExitStatus, Header, Message, Stream};
use crate::text::{clip, text};

use super::backend::{Backend, Count, End, Failure, Kill, Output, Req, Start};
use super::slot::{Exec, Get, GetPhase, Op, Put, PutFault, PutPhase};
use super::tx::{Security, Staging};
use super::{Phase, State, CLOSE_GRACE_MS, MAX_ERROR_TEXT};
use crate::outgoing as tx;

/// What a request did in one turn.
enum Turn {
    /// Nothing to send now.
    Idle,
    /// A frame of this many bytes; the request goes on.
    Frame(usize),
    /// Its final frame; the request ends.
    Last(usize, End),
}

/// Where a turn writes its frame.
struct Out<'a> {
    sec: &'a mut Security,
    dst: &'a mut [u8],
    max_chunk: usize,
}

impl Out<'_> {
    /// A body-less frame (an INTERNAL error if it does not fit, which the
    /// room kept for replies rules out for well-behaved backends).
    fn control(&mut self, h: &Header<'_>) -> usize {
        if let Some(n) = tx::compose(self.sec.keys(), self.dst, h) {
            return n;
        }
        let e = Header::new(
            h.request_id,
            Message::Error {
                code: ErrorCode::INTERNAL,
                message: "the reply does not fit this server's buffers",
            },
        );
        tx::compose(self.sec.keys(), self.dst, &e).unwrap_or(0)
    }

    fn error(&mut self, id: u32, code: ErrorCode, message: &str) -> usize {
        let message = clip(message, MAX_ERROR_TEXT);
        self.control(&Header::new(id, Message::Error { code, message }))
    }

    fn failed(&mut self, id: u32, f: Failure<'_>) -> Turn {
        Turn::Last(self.error(id, f.code, f.message), End::Failed(f.code))
    }

    /// The region where the body of a frame with header `h` goes.
    fn body_region(&self, h: &Header<'_>, left: u64) -> core::ops::Range<usize> {
        let max = (self.max_chunk as u64).min(left) as usize;
        tx::body_region(self.sec.keys_ref(), self.dst.len(), h.buffer_len(), max)
    }
}

impl<const N: usize> State<N> {
    /// Fill `out` with queued frames, then with new ones while they fit.
    pub(super) fn transmit<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        tx: &mut Staging<B>,
        out: &mut [u8],
        bk: &mut K,
    ) -> usize {
        let mut n = 0;
        loop {
            n += tx.drain(&mut out[n..]);
            if tx.queued() > 0 || n == out.len() {
                break;
            }
            if let Some(f) = self.fatal.take() {
                if tx.has_room(self.control_room()) {
                    let t = text(format_args!("{}; closing the connection", f.code));
                    self.error(tx, f.id, f.code, t.as_str(), bk);
                    continue;
                }
                self.fatal = Some(f);
                break;
            }
            if self.phase != Phase::Open {
                break;
            }
            let room = self.control_room();
            if out.len() - n >= room {
                match self.round(&mut out[n..], bk) {
                    0 => break,
                    k => n += k,
                }
            } else if n == 0 && tx.has_room(room) {
                // A small output buffer: go through the staging queue.
                match self.round(tx.free(), bk) {
                    0 => break,
                    k => tx.commit(k),
                }
            } else {
                break;
            }
        }
        n
    }

    /// One frame from the first request, from `turn` on, that has one.
    fn round<K: Backend>(&mut self, dst: &mut [u8], bk: &mut K) -> usize {
        for k in 0..N {
            let i = (self.turn + k) % N;
            if !self.table.slots[i].wants_transmit() {
                continue;
            }
            // Nothing is said about a sealed frame being received before
            // its tag verified, not even an upload error found in its body.
            if self.rx.tag.is_some() && self.table.slots[i].is_upload_fault() {
                continue;
            }
            let turn = self.step(i, dst, bk);
            let n = match turn {
                Turn::Idle => continue,
                Turn::Frame(n) => n,
                Turn::Last(n, how) => {
                    self.finish(i, how, bk);
                    n
                }
            };
            self.turn = (i + 1) % N;
            if n > 0 {
                bk.count(Count::FrameOut);
            }
            return n;
        }
        0
    }

    /// A request was started or advanced by a received frame: if its next
    /// frame is a reply the backend may have at once (a device's), queue
    /// it now, so replies keep the order of their requests.
    pub(super) fn kick<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        i: usize,
        tx: &mut Staging<B>,
        bk: &mut K,
    ) {
        let reply_next = match &self.table.slots[i].op {
            Op::Stat | Op::Remove => true,
            Op::Get { get, .. } => matches!(
                get.phase,
                GetPhase::Open | GetPhase::Prefix | GetPhase::Info
            ),
            Op::Put(p) => matches!(p.phase, PutPhase::Create | PutPhase::Commit),
            _ => false,
        };
        let room = self.control_room();
        if !reply_next || !tx.has_room(room) || self.table.slots[i].wait {
            return;
        }
        let n = match self.step(i, tx.free(), bk) {
            Turn::Idle => return,
            Turn::Frame(n) => n,
            Turn::Last(n, how) => {
                self.finish(i, how, bk);
                n
            }
        };
        tx.commit(n);
        bk.count(Count::FrameOut);
    }

    /// The next frame of request `i` into `dst`.
    fn step<K: Backend>(&mut self, i: usize, dst: &mut [u8], bk: &mut K) -> Turn {
        let req = self.table.req(i);
        let mut out = Out {
            sec: &mut self.sec,
            dst,
            max_chunk: self.max_chunk as usize,
        };
        let slot = &mut self.table.slots[i];
        let turn = match &mut slot.op {
            Op::Free => Turn::Idle,
            Op::Stat => match bk.poll_stat(req) {
                Poll::Pending => Turn::Idle,
                Poll::Ready(Ok(e)) => Turn::Last(
                    out.control(&Header::new(req.id, Message::StatReply(e))),
                    End::Done,
                ),
                Poll::Ready(Err(f)) => out.failed(req.id, f),
            },
            Op::Remove => match bk.poll_remove(req) {
                Poll::Pending => Turn::Idle,
                Poll::Ready(Ok(())) => {
                    let h = Header::new(
                        req.id,
                        Message::Done {
                            bytes: 0,
                            sha256: None,
                        },
                    );
                    Turn::Last(out.control(&h), End::Done)
                }
                Poll::Ready(Err(f)) => out.failed(req.id, f),
            },
            Op::List { sent, cancelled } => list(req, sent, *cancelled, &mut out, bk),
            Op::Get { get, cancelled } => self::get(req, get, *cancelled, &mut out, bk),
            Op::Put(put) => self::put(req, put, &mut out, bk),
            Op::Exec(exec) => self::exec(req, exec, &mut out, bk),
        };
        if matches!(turn, Turn::Idle) {
            slot.wait = true;
        }
        turn
    }

    /// Whether a request waits for the backend's work (a command that
    /// runs, a file being read): the connection is not idle then.
    fn waiting_on_backend(&self) -> bool {
        self.table.slots.iter().any(|s| s.wait)
    }

    pub(super) fn poll_timeout(&self) -> Option<u64> {
        let after = |from: u64, ms: u32| (ms > 0).then(|| from.saturating_add(u64::from(ms)));
        match self.phase {
            Phase::Closed => None,
            Phase::Hello | Phase::Auth => after(self.accepted_ms, self.cfg.handshake_timeout_ms),
            Phase::Closing if self.force_close => None,
            Phase::Closing => Some(self.active_ms.saturating_add(CLOSE_GRACE_MS)),
            Phase::Open => {
                let idle = if self.waiting_on_backend() {
                    None
                } else {
                    after(self.active_ms, self.cfg.idle_timeout_ms)
                };
                let exec = self
                    .table
                    .slots
                    .iter()
                    .filter_map(|s| match s.op {
                        Op::Exec(Exec {
                            deadline: Some(d),
                            killed: None,
                        }) => Some(d),
                        _ => None,
                    })
                    .min();
                match (idle, exec) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    pub(super) fn handle_timeout<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        now: u64,
        tx: &mut Staging<B>,
        bk: &mut K,
    ) {
        match self.phase {
            Phase::Closed => {}
            Phase::Hello | Phase::Auth => {
                let ms = self.cfg.handshake_timeout_ms;
                if ms == 0 || now < self.accepted_ms.saturating_add(ms.into()) {
                    return;
                }
                bk.count(Count::Timeout);
                let what = if self.phase == Phase::Hello {
                    "Hello"
                } else {
                    "Auth"
                };
                let t = text(format_args!(
                    "no {what} within {ms} ms of connecting (handshake deadline); closing"
                ));
                self.fatal(tx, 0, ErrorCode::TIMEOUT, t.as_str(), bk);
                self.active_ms = now;
            }
            Phase::Closing => {
                if !self.force_close && now >= self.active_ms.saturating_add(CLOSE_GRACE_MS) {
                    bk.count(Count::Timeout);
                    self.force_close = true;
                }
            }
            Phase::Open => self.open_timeouts(now, tx, bk),
        }
    }

    fn open_timeouts<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        now: u64,
        tx: &mut Staging<B>,
        bk: &mut K,
    ) {
        for i in 0..N {
            let req = self.table.req(i);
            let slot = &mut self.table.slots[i];
            if let Op::Exec(e) = &mut slot.op {
                if e.killed.is_none() && e.deadline.is_some_and(|d| now >= d) {
                    e.killed = Some(Kill::Timeout);
                    slot.wait = false;
                    bk.kill(req, Kill::Timeout);
                }
            }
        }
        let ms = self.cfg.idle_timeout_ms;
        if ms == 0 || self.waiting_on_backend() || now < self.active_ms.saturating_add(ms.into()) {
            return;
        }
        bk.count(Count::Timeout);
        let t = if self.has_work() {
            text(format_args!(
                "the peer read nothing for {ms} ms; closing (an interrupted get or put resumes when run again)"
            ))
        } else if self.table.in_flight() > 0 {
            text(format_args!(
                "no data for {ms} ms during an upload; closing (the partial is kept: run the put again to resume)"
            ))
        } else {
            text(format_args!(
                "idle for {ms} ms; closing (reconnect to go on)"
            ))
        };
        self.fatal(tx, 0, ErrorCode::TIMEOUT, t.as_str(), bk);
        self.active_ms = now;
    }
}

fn list<K: Backend>(
    req: Req,
    sent: &mut u64,
    cancelled: bool,
    out: &mut Out<'_>,
    bk: &mut K,
) -> Turn {
    if cancelled {
        let n = out.error(req.id, ErrorCode::CANCELLED, "the listing was cancelled");
        return Turn::Last(n, End::Interrupted(ErrorCode::CANCELLED));
    }
    match bk.poll_list(req) {
        Poll::Pending => Turn::Idle,
        Poll::Ready(Some(Ok(e))) => {
            *sent += 1;
            Turn::Frame(out.control(&Header::new(req.id, Message::ListEntry(e))))
        }
        Poll::Ready(None) => {
            let h = Header::new(
                req.id,
                Message::Done {
                    bytes: *sent,
                    sha256: None,
                },
            );
            Turn::Last(out.control(&h), End::Done)
        }
        Poll::Ready(Some(Err(f))) => out.failed(req.id, f),
    }
}

fn get<K: Backend>(req: Req, g: &mut Get, cancelled: bool, out: &mut Out<'_>, bk: &mut K) -> Turn {
    if cancelled {
        let n = out.error(req.id, ErrorCode::CANCELLED, "the download was cancelled");
        return Turn::Last(n, End::Interrupted(ErrorCode::CANCELLED));
    }
    loop {
        match g.phase {
            GetPhase::Open => match bk.poll_open(req) {
                Poll::Pending => return Turn::Idle,
                Poll::Ready(Err(f)) => return out.failed(req.id, f),
                Poll::Ready(Ok(o)) => {
                    g.size = o.size;
                    g.modified = o.modified;
                    // Past the end: start over at 0 (FileInfo says so).
                    g.start = if g.asked <= o.size { g.asked } else { 0 };
                    g.pos = g.start;
                    if g.start > 0 {
                        bk.start(req, Start::HashPrefix { len: g.start });
                        g.phase = GetPhase::Prefix;
                    } else {
                        g.phase = GetPhase::Info;
                    }
                }
            },
            GetPhase::Prefix => match bk.poll_prefix(req) {
                Poll::Pending => return Turn::Idle,
                Poll::Ready(Err(f)) => return out.failed(req.id, f),
                Poll::Ready(Ok(h)) => {
                    g.hasher = h;
                    g.phase = GetPhase::Info;
                }
            },
            GetPhase::Info => {
                let prefix = (g.start > 0).then(|| g.hasher.clone().finalize().into());
                let h = Header::new(
                    req.id,
                    Message::FileInfo {
                        size: g.size,
                        modified: g.modified,
                        offset: g.start,
                        prefix_sha256: prefix,
                    },
                );
                let n = out.control(&h);
                g.phase = GetPhase::Data;
                if g.pos == g.size {
                    bk.start(req, Start::CheckUnchanged);
                    g.phase = GetPhase::Check;
                }
                return Turn::Frame(n);
            }
            GetPhase::Data => return get_data(req, g, out, bk),
            GetPhase::Check => {
                return match bk.poll_unchanged(req) {
                    Poll::Pending => Turn::Idle,
                    Poll::Ready(Err(f)) => out.failed(req.id, f),
                    Poll::Ready(Ok(())) => {
                        bk.count(Count::FileSent);
                        let digest: Digest = g.hasher.clone().finalize().into();
                        let h = Header::new(
                            req.id,
                            Message::Done {
                                bytes: g.size,
                                sha256: Some(digest),
                            },
                        );
                        Turn::Last(out.control(&h), End::Done)
                    }
                };
            }
        }
    }
}

/// One Data frame of a Get, read by the backend straight into place.
fn get_data<K: Backend>(req: Req, g: &mut Get, out: &mut Out<'_>, bk: &mut K) -> Turn {
    let h = Header::new(req.id, Message::Data);
    let region = out.body_region(&h, g.size - g.pos);
    let r = bk.poll_read(req, g.pos, &mut out.dst[region.clone()]);
    let k = match r {
        Poll::Pending => return Turn::Idle,
        Poll::Ready(Err(f)) => return out.failed(req.id, f),
        Poll::Ready(Ok(0)) => {
            let n = out.error(
                req.id,
                ErrorCode::CHANGED,
                "the file shrank while being sent; nothing was committed: run the get again",
            );
            return Turn::Last(n, End::Failed(ErrorCode::CHANGED));
        }
        Poll::Ready(Ok(k)) => k.min(region.len()),
    };
    g.hasher.update(&out.dst[region.start..region.start + k]);
    g.pos += k as u64;
    let n = tx::finish(out.sec.keys(), out.dst, &h, k);
    if g.pos == g.size {
        bk.start(req, Start::CheckUnchanged);
        g.phase = GetPhase::Check;
    }
    Turn::Frame(n)
}

fn put<K: Backend>(req: Req, p: &mut Put, out: &mut Out<'_>, bk: &mut K) -> Turn {
    match p.phase {
        PutPhase::Receiving => Turn::Idle,
        PutPhase::Create => match bk.poll_create(req) {
            Poll::Pending => Turn::Idle,
            Poll::Ready(Err(f)) => out.failed(req.id, f),
            Poll::Ready(Ok(c)) => {
                let offset = c.offset.min(p.size);
                let (hasher, prefix) = match (offset, c.hasher) {
                    (1.., Some(h)) => {
                        let d: Digest = h.clone().finalize().into();
                        (h, Some(d))
                    }
                    _ => (Default::default(), None),
                };
                let offset = if prefix.is_some() { offset } else { 0 };
                p.hasher = hasher;
                p.start = offset;
                p.got = offset;
                p.phase = PutPhase::Receiving;
                let h = Header::new(
                    req.id,
                    Message::PutReady {
                        offset,
                        prefix_sha256: prefix,
                    },
                );
                Turn::Frame(out.control(&h))
            }
        },
        PutPhase::Commit => match bk.poll_commit(req) {
            Poll::Pending => Turn::Idle,
            // Verified bytes that could not be committed (a destination
            // that appeared meanwhile: EXISTS) stay as the partial.
            Poll::Ready(Err(f)) => {
                let n = out.error(req.id, f.code, f.message);
                Turn::Last(n, End::Interrupted(f.code))
            }
            Poll::Ready(Ok(())) => {
                bk.count(Count::FileStored);
                let digest: Digest = p.hasher.clone().finalize().into();
                let h = Header::new(
                    req.id,
                    Message::Done {
                        bytes: p.size,
                        sha256: Some(digest),
                    },
                );
                Turn::Last(out.control(&h), End::Done)
            }
        },
        PutPhase::Fault(fault) => {
            let t = fault_text(fault, p);
            let code = fault.code();
            let n = out.error(req.id, code, t.as_str());
            let how = if fault.keeps_partial() {
                End::Interrupted(code)
            } else {
                End::Failed(code)
            };
            Turn::Last(n, how)
        }
    }
}

/// The text of an upload's Error made by the engine.
fn fault_text(fault: PutFault, p: &Put) -> crate::text::Text {
    let size = p.size;
    match fault {
        PutFault::Overflow => text(format_args!(
            "more data than the announced {size} bytes; nothing was stored, send it again"
        )),
        PutFault::Length { claimed } => text(format_args!(
            "announced {size} bytes, Done says {claimed}, received {}; nothing was stored, send it again",
            p.got
        )),
        PutFault::NoDigest => text(format_args!(
            "the upload's Done carried no SHA-256; nothing was stored, send it again"
        )),
        PutFault::Digest => text(format_args!(
            "the SHA-256 of the data received differs from the client's; nothing was stored, send it again"
        )),
        PutFault::Write(code) => text(format_args!(
            "writing the upload failed ({code}); {} bytes are kept: run the put again to resume",
            p.got
        )),
        PutFault::Early => text(format_args!(
            "upload data before PutReady; nothing was stored, send the put again"
        )),
        PutFault::Cancelled => text(format_args!(
            "the upload was cancelled; {} bytes are kept for resuming",
            p.got
        )),
    }
}

fn exec<K: Backend>(req: Req, e: &mut Exec, out: &mut Out<'_>, bk: &mut K) -> Turn {
    // Output's header has the same length for either stream.
    let h = Header::new(
        req.id,
        Message::Output {
            stream: Stream::Stdout,
        },
    );
    let region = out.body_region(&h, u64::MAX);
    let r = bk.poll_exec(req, &mut out.dst[region.clone()]);
    match r {
        Poll::Pending => Turn::Idle,
        Poll::Ready(Err(f)) => out.failed(req.id, f),
        Poll::Ready(Ok(Output::Bytes(_, 0))) => Turn::Idle,
        Poll::Ready(Ok(Output::Bytes(stream, k))) => {
            let h = Header::new(req.id, Message::Output { stream });
            Turn::Frame(tx::finish(out.sec.keys(), out.dst, &h, k.min(region.len())))
        }
        Poll::Ready(Ok(Output::Exited(status))) => {
            let status = match e.killed {
                Some(Kill::Timeout) => ExitStatus::TimedOut,
                Some(Kill::Cancel) => ExitStatus::Cancelled,
                None => status,
            };
            let h = Header::new(req.id, Message::Exit { status });
            Turn::Last(out.control(&h), End::Done)
        }
    }
}

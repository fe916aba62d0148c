//! The table of requests in flight: one [`Slot`] per request, each holding
//! only the state its protocol rules need (phases, sizes, a running
//! SHA-256); results and texts stay with the backend until they are sent.

use sha2::Sha256;

use crate::message::ErrorCode;

use super::backend::{Kill, Req};

/// Where a Get is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GetPhase {
    /// Waiting for the file to open.
    Open,
    /// Hashing the prefix the requester holds.
    Prefix,
    /// FileInfo is due.
    Info,
    /// Data frames are due.
    Data,
    /// All bytes sent: checking the file did not change, then Done.
    Check,
}

#[derive(Debug, Clone)]
pub(crate) struct Get {
    pub phase: GetPhase,
    /// The offset the requester asked for.
    pub asked: u64,
    pub size: u64,
    pub modified: u64,
    /// Where the Data frames start.
    pub start: u64,
    /// The next byte to send.
    pub pos: u64,
    pub hasher: Sha256,
}

/// Why the engine ends an upload with an Error of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutFault {
    /// More data than announced.
    Overflow,
    /// Done's byte count, or the bytes received, differ from the size.
    Length {
        /// What Done said.
        claimed: u64,
    },
    /// Done carried no digest.
    NoDigest,
    /// The digest differs.
    Digest,
    /// The backend could not write (the code it gave).
    Write(ErrorCode),
    /// Data or Done came before PutReady was sent.
    Early,
    /// The client cancelled it.
    Cancelled,
}

impl PutFault {
    pub(crate) fn code(self) -> ErrorCode {
        match self {
            PutFault::Overflow | PutFault::Length { .. } => ErrorCode::BAD_LENGTH,
            PutFault::NoDigest | PutFault::Digest => ErrorCode::DIGEST_MISMATCH,
            PutFault::Write(c) => c,
            PutFault::Early => ErrorCode::UNEXPECTED,
            PutFault::Cancelled => ErrorCode::CANCELLED,
        }
    }

    /// Whether the partial is kept for resuming (else discarded).
    pub(crate) fn keeps_partial(self) -> bool {
        matches!(self, PutFault::Write(_) | PutFault::Cancelled)
    }
}

/// Where a Put is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutPhase {
    /// Waiting for the backend to prepare the upload.
    Create,
    /// Receiving Data until the client's Done.
    Receiving,
    /// Verified: committing.
    Commit,
    /// Ending with an Error of the engine's.
    Fault(PutFault),
}

#[derive(Debug, Clone)]
pub(crate) struct Put {
    pub phase: PutPhase,
    pub size: u64,
    /// Where the data started (the resumed prefix).
    pub start: u64,
    /// Bytes held: the resumed prefix plus what arrived.
    pub got: u64,
    pub hasher: Sha256,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Exec {
    /// Monotonic ms after which the command is killed.
    pub deadline: Option<u64>,
    /// Why it was killed, if it was: decides its final status.
    pub killed: Option<Kill>,
}

/// What a slot is doing.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Free,
    Stat,
    Remove,
    List { sent: u64, cancelled: bool },
    Get { get: Get, cancelled: bool },
    Put(Put),
    Exec(Exec),
}

#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// The request id (meaningless while free).
    pub id: u32,
    /// A poll answered Pending: wait for `handle_ready`.
    pub wait: bool,
    pub op: Op,
}

impl Slot {
    pub(crate) const FREE: Slot = Slot {
        id: 0,
        wait: false,
        op: Op::Free,
    };

    pub(crate) fn is_free(&self) -> bool {
        matches!(self.op, Op::Free)
    }

    /// Whether the server is working on it (an upload waiting for the
    /// client's data is not).
    pub(crate) fn is_busy(&self) -> bool {
        !matches!(
            self.op,
            Op::Free
                | Op::Put(Put {
                    phase: PutPhase::Receiving,
                    ..
                })
        )
    }

    /// Whether it may have a frame to send now.
    pub(crate) fn wants_transmit(&self) -> bool {
        !self.wait && self.is_busy()
    }

    /// Whether its reply is an upload's Error of the engine's (held back
    /// while a sealed frame's tag is unverified).
    pub(crate) fn is_upload_fault(&self) -> bool {
        matches!(
            self.op,
            Op::Put(Put {
                phase: PutPhase::Fault(_),
                ..
            })
        )
    }
}

/// The table of `N` slots and the ids of uploads that ended lately.
#[derive(Debug, Clone)]
pub(crate) struct Table<const N: usize> {
    pub slots: [Slot; N],
    /// Ids of uploads that ended lately (a ring): their Data and Done,
    /// still in flight from the client, are dropped rather than refused.
    ended: [u32; N],
    ended_next: usize,
}

impl<const N: usize> Table<N> {
    pub(crate) const fn new() -> Self {
        Table {
            slots: [const { Slot::FREE }; N],
            ended: [0; N],
            ended_next: 0,
        }
    }

    pub(crate) fn find(&self, id: u32) -> Option<usize> {
        self.slots.iter().position(|s| !s.is_free() && s.id == id)
    }

    pub(crate) fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(Slot::is_free)
    }

    pub(crate) fn req(&self, i: usize) -> Req {
        Req {
            slot: i as u16,
            id: self.slots[i].id,
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| !s.is_free()).count()
    }

    /// Remember that upload `id` ended.
    pub(crate) fn upload_ended(&mut self, id: u32) {
        if N == 0 || self.ended.contains(&id) {
            return;
        }
        self.ended[self.ended_next] = id;
        self.ended_next = (self.ended_next + 1) % N;
    }

    pub(crate) fn recently_ended(&self, id: u32) -> bool {
        id != 0 && self.ended.contains(&id)
    }

    pub(crate) fn forget_ended(&mut self) {
        self.ended = [0; N];
    }
}

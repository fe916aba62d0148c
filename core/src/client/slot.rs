//! The client's table of requests in flight and what each expects next.

use sha2::Sha256;

use crate::message::Digest;

use super::event::ReqId;

/// Where a Get is.
#[derive(Debug, Clone)]
pub(crate) enum GetPhase {
    /// Waiting for FileInfo; what the caller holds, if anything.
    Info(Option<(u64, Sha256)>),
    /// Receiving Data.
    Data,
    /// Cancelled because the caller's partial does not match: wait for
    /// the request's end, then say so.
    Mismatch,
}

#[derive(Debug, Clone)]
pub(crate) struct Get {
    pub phase: GetPhase,
    pub size: u64,
    pub got: u64,
    pub hasher: Sha256,
}

/// Where a Put is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutPhase {
    /// Waiting for PutReady.
    Ready,
    /// Hashing the caller's prefix to compare with the server's partial.
    Prefix { offset: u64, theirs: Digest },
    /// Sending Data.
    Sending,
    /// All bytes read: checking the file did not change.
    Checking,
    /// Done was sent: waiting for the server's.
    Committing,
    /// Cancelled because the server's partial does not match.
    Mismatch,
    /// Cancelled because the caller's file failed (the Failed event was
    /// given): wait for the request's end, silently.
    Abandoned,
}

#[derive(Debug, Clone)]
pub(crate) struct Put {
    pub phase: PutPhase,
    pub size: u64,
    pub pos: u64,
    pub resume: bool,
    pub hasher: Sha256,
    /// The digest of what was sent, once all was.
    pub sent: Option<Digest>,
}

/// What a slot is doing.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Free,
    Ping,
    Echo,
    Time,
    Exec,
    Stat,
    List { count: u64 },
    Remove,
    Get(Get),
    Put(Put),
}

#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub id: u32,
    /// An upload's read or hash answered Pending: wait for `handle_ready`.
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

    /// Whether it has frames to send (an upload's data or Done).
    pub(crate) fn wants_transmit(&self) -> bool {
        !self.wait
            && matches!(
                self.op,
                Op::Put(Put {
                    phase: PutPhase::Prefix { .. } | PutPhase::Sending | PutPhase::Checking,
                    ..
                })
            )
    }
}

/// The table of `N` slots and the next request id.
#[derive(Debug, Clone)]
pub(crate) struct Table<const N: usize> {
    pub slots: [Slot; N],
    next_id: u32,
}

impl<const N: usize> Table<N> {
    pub(crate) const fn new() -> Self {
        Table {
            slots: [const { Slot::FREE }; N],
            next_id: 1,
        }
    }

    pub(crate) fn find(&self, id: u32) -> Option<usize> {
        self.slots.iter().position(|s| !s.is_free() && s.id == id)
    }

    /// A free slot and a fresh id for it.
    pub(crate) fn take(&mut self, limit: usize) -> Option<(usize, u32)> {
        if self.in_flight() >= limit {
            return None;
        }
        let i = self.slots.iter().position(Slot::is_free)?;
        Some((i, self.fresh_id()))
    }

    /// An id no request in flight uses (ids grow and wrap, skipping 0).
    pub(crate) fn fresh_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if self.find(id).is_none() {
                return id;
            }
        }
    }

    pub(crate) fn req(&self, i: usize) -> ReqId {
        ReqId {
            slot: i as u16,
            id: self.slots[i].id,
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| !s.is_free()).count()
    }
}

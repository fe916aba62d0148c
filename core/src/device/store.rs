//! The device's file store: the [`Store`] trait firmware implements (over
//! flash, say) and [`RamStore`], a fixed-capacity store in a caller-owned
//! byte arena that the simulator uses.
//!
//! The namespace is flat: a file is a name of at most [`Store::max_name`]
//! bytes (no `/`). Uploads are atomic: [`Store::begin`] reserves a temporary
//! slot of the announced size, [`Store::write`] fills it, and only
//! [`Store::commit`] makes it visible under its name, replacing an older file
//! of that name in one step. [`Store::discard`] (or a reboot, via
//! [`Store::recover`]) drops a temporary slot without a trace. A temporary
//! slot whose upload was interrupted stays until then, so the upload can
//! resume ([`Store::partial`]).

use core::fmt;

use crate::message::ErrorCode;

/// Identifies a file (or a temporary upload slot) within one store.
pub type FileId = u16;

/// Longest file name [`RamStore`] keeps, in bytes.
pub const NAME_MAX: usize = 48;

/// What [`Store::meta`] tells about a committed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta<'a> {
    /// The file's name.
    pub name: &'a str,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch (0 if unknown).
    pub modified: u64,
    /// Changes whenever the file behind the id changes (replaced, removed,
    /// the id reused): a reader compares it to notice a file that changed
    /// while it was being sent.
    pub generation: u32,
}

/// A temporary slot kept from an interrupted upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partial {
    /// The slot.
    pub id: FileId,
    /// The size reserved (the upload's announced size).
    pub size: u64,
    /// Bytes written from offset 0 without a gap.
    pub written: u64,
}

/// How full a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes held by committed files and reserved by uploads in progress.
    pub used: u64,
    /// Total bytes the store can hold.
    pub capacity: u64,
    /// Committed files.
    pub files: u32,
    /// Uploads in progress (temporary slots).
    pub pending: u32,
    /// Most files (committed plus pending) the store can track.
    pub max_files: u32,
}

/// Why a store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum StoreError {
    /// No such file (or temporary slot).
    NotFound,
    /// The name is longer than the store allows (the limit given).
    NameTooLong {
        /// Longest name allowed, in bytes.
        max: usize,
    },
    /// The name is empty or contains a character the store refuses.
    BadName,
    /// Not enough free space for the size asked.
    NoSpace {
        /// Bytes asked for.
        needed: u64,
        /// Bytes free.
        free: u64,
    },
    /// Every file slot is taken.
    NoSlot {
        /// How many files the store tracks.
        max: u32,
    },
    /// A file of that name exists and replacing it was not asked for.
    Exists,
    /// A write past the size reserved by [`Store::begin`].
    OutOfRange,
    /// The medium failed.
    Io,
}

impl StoreError {
    /// The protocol error code to answer with.
    pub fn code(self) -> ErrorCode {
        match self {
            StoreError::NotFound => ErrorCode::NOT_FOUND,
            StoreError::NameTooLong { .. } => ErrorCode::TOO_LARGE,
            StoreError::BadName => ErrorCode::PATH_REFUSED,
            StoreError::NoSpace { .. } | StoreError::NoSlot { .. } => ErrorCode::NO_SPACE,
            StoreError::Exists => ErrorCode::EXISTS,
            StoreError::OutOfRange => ErrorCode::BAD_LENGTH,
            StoreError::Io => ErrorCode::IO,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound => write!(f, "no such file"),
            StoreError::NameTooLong { max } => {
                write!(f, "file name longer than the store's limit of {max} bytes")
            }
            StoreError::BadName => write!(f, "invalid file name"),
            StoreError::NoSpace { needed, free } => {
                write!(f, "not enough space: {needed} bytes needed, {free} free")
            }
            StoreError::NoSlot { max } => write!(f, "store full: all {max} file slots in use"),
            StoreError::Exists => write!(f, "file exists (use force to replace it)"),
            StoreError::OutOfRange => write!(f, "write past the announced size"),
            StoreError::Io => write!(f, "storage i/o error"),
        }
    }
}

impl core::error::Error for StoreError {}

/// A fixed-capacity file store. Object safe, so commands can get it as
/// `&mut dyn Store`.
///
/// Contract: ids returned by [`find`](Store::find) and [`next`](Store::next)
/// name committed files; ids from [`begin`](Store::begin) name temporary
/// slots, invisible to `find`, `next` and `meta` until committed.
pub trait Store {
    /// Longest name accepted, in bytes.
    fn max_name(&self) -> usize;
    /// Space and slot use.
    fn usage(&self) -> Usage;
    /// The committed file called `name`.
    fn find(&self, name: &str) -> Option<FileId>;
    /// Name, size and time of a committed file.
    fn meta(&self, id: FileId) -> Option<FileMeta<'_>>;
    /// The committed file after `after` in the store's order (the first one for `None`).
    fn next(&self, after: Option<FileId>) -> Option<FileId>;
    /// Read bytes of a committed file from `offset` into `buf`; returns how
    /// many (0 at or past the end).
    fn read(&self, id: FileId, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError>;
    /// Reserve a temporary slot of exactly `size` bytes for an upload to `name`.
    fn begin(&mut self, name: &str, size: u64) -> Result<FileId, StoreError>;
    /// The temporary slot of an upload to `name`, if one is kept.
    fn partial(&self, name: &str) -> Option<Partial>;
    /// The temporary slot after `after` in the store's order (the first
    /// one for `None`): to evict kept partials when space runs out.
    fn next_partial(&self, after: Option<FileId>) -> Option<FileId>;
    /// Read bytes of a temporary slot from `offset` (the kept prefix of an
    /// interrupted upload); returns how many.
    fn read_partial(&self, tmp: FileId, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError>;
    /// Write bytes of a temporary slot at `offset`.
    fn write(&mut self, tmp: FileId, offset: u64, data: &[u8]) -> Result<(), StoreError>;
    /// Make a temporary slot the file of its name, atomically replacing an
    /// existing one when `replace` is set ([`StoreError::Exists`] otherwise).
    fn commit(&mut self, tmp: FileId, modified: u64, replace: bool) -> Result<(), StoreError>;
    /// Drop a temporary slot.
    fn discard(&mut self, tmp: FileId);
    /// Remove a committed file.
    fn remove(&mut self, id: FileId) -> Result<(), StoreError>;
    /// Drop every temporary slot (call at boot: an upload cut by a reset
    /// never becomes a file).
    fn recover(&mut self);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    Temp,
    File,
}

#[derive(Debug, Clone)]
struct Slot {
    state: SlotState,
    name: heapless::String<NAME_MAX>,
    start: usize,
    len: usize,
    modified: u64,
    /// A temporary slot: bytes written from 0 without a gap.
    written: usize,
    generation: u32,
}

impl Slot {
    const FREE: Slot = Slot {
        state: SlotState::Free,
        name: heapless::String::new(),
        start: 0,
        len: 0,
        modified: 0,
        written: 0,
        generation: 0,
    };

    /// Change the slot's state (every change is a new generation).
    fn set(&mut self, state: SlotState) {
        self.state = state;
        self.generation = self.generation.wrapping_add(1);
    }
}

/// A store in a caller-owned byte arena `B` with at most `FILES` files.
///
/// Each file (and each upload in progress) is one contiguous extent of the
/// arena, placed first-fit. When free space is enough but fragmented, the
/// extents are compacted (moved down) before the allocation. Metadata is
/// `FILES` slots of about 80 bytes each, outside the arena.
#[derive(Debug)]
pub struct RamStore<B, const FILES: usize> {
    arena: B,
    slots: [Slot; FILES],
}

impl<B: AsRef<[u8]> + AsMut<[u8]>, const FILES: usize> RamStore<B, FILES> {
    /// An empty store over `arena`.
    pub fn new(arena: B) -> Self {
        RamStore {
            arena,
            slots: [const { Slot::FREE }; FILES],
        }
    }

    fn cap(&self) -> usize {
        self.arena.as_ref().len()
    }

    fn used_bytes(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state != SlotState::Free)
            .map(|s| s.len)
            .sum()
    }

    fn slot(&self, id: FileId, state: SlotState) -> Result<&Slot, StoreError> {
        match self.slots.get(usize::from(id)) {
            Some(s) if s.state == state => Ok(s),
            _ => Err(StoreError::NotFound),
        }
    }

    /// First gap of `size` bytes between the extents in use.
    fn find_gap(&self, size: usize) -> Option<usize> {
        let mut at = 0usize;
        loop {
            // The extent in use that starts lowest at or after `at` and overlaps [at, at+size).
            let blocker = self
                .slots
                .iter()
                .filter(|s| s.state != SlotState::Free && s.len > 0)
                .filter(|s| s.start < at.saturating_add(size) && s.start + s.len > at)
                .map(|s| s.start + s.len)
                .max();
            match blocker {
                None if at.checked_add(size)? <= self.cap() => return Some(at),
                None => return None,
                Some(end) => at = end,
            }
        }
    }

    /// Move every extent down so that free space is one block at the end.
    fn compact(&mut self) {
        let mut at = 0usize;
        loop {
            // The lowest extent at or above `at`.
            let next = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.state != SlotState::Free && s.len > 0 && s.start >= at)
                .min_by_key(|(_, s)| s.start)
                .map(|(i, _)| i);
            let Some(i) = next else { return };
            let (start, len) = (self.slots[i].start, self.slots[i].len);
            if start != at {
                self.arena.as_mut().copy_within(start..start + len, at);
                self.slots[i].start = at;
            }
            at += len;
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b'\\' || b < 0x20 || b == 0x7f)
}

impl<B: AsRef<[u8]> + AsMut<[u8]>, const FILES: usize> Store for RamStore<B, FILES> {
    fn max_name(&self) -> usize {
        NAME_MAX
    }

    fn usage(&self) -> Usage {
        let count = |st| self.slots.iter().filter(|s| s.state == st).count() as u32;
        Usage {
            used: self.used_bytes() as u64,
            capacity: self.cap() as u64,
            files: count(SlotState::File),
            pending: count(SlotState::Temp),
            max_files: FILES as u32,
        }
    }

    fn find(&self, name: &str) -> Option<FileId> {
        self.slots
            .iter()
            .position(|s| s.state == SlotState::File && s.name == name)
            .map(|i| i as FileId)
    }

    fn meta(&self, id: FileId) -> Option<FileMeta<'_>> {
        let s = self.slot(id, SlotState::File).ok()?;
        Some(FileMeta {
            name: &s.name,
            size: s.len as u64,
            modified: s.modified,
            generation: s.generation,
        })
    }

    fn next(&self, after: Option<FileId>) -> Option<FileId> {
        let from = after.map_or(0, |a| usize::from(a) + 1);
        (from..FILES)
            .find(|&i| self.slots[i].state == SlotState::File)
            .map(|i| i as FileId)
    }

    fn read(&self, id: FileId, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        let s = self.slot(id, SlotState::File)?;
        if offset >= s.len as u64 {
            return Ok(0);
        }
        let off = offset as usize;
        let n = buf.len().min(s.len - off);
        buf[..n].copy_from_slice(&self.arena.as_ref()[s.start + off..s.start + off + n]);
        Ok(n)
    }

    fn begin(&mut self, name: &str, size: u64) -> Result<FileId, StoreError> {
        if name.len() > NAME_MAX {
            return Err(StoreError::NameTooLong { max: NAME_MAX });
        }
        if !valid_name(name) {
            return Err(StoreError::BadName);
        }
        let free = (self.cap() - self.used_bytes()) as u64;
        if size > free {
            return Err(StoreError::NoSpace { needed: size, free });
        }
        let Some(i) = self.slots.iter().position(|s| s.state == SlotState::Free) else {
            return Err(StoreError::NoSlot { max: FILES as u32 });
        };
        let size = size as usize;
        let start = match self.find_gap(size) {
            Some(at) => at,
            None => {
                self.compact();
                self.find_gap(size).ok_or(StoreError::NoSpace {
                    needed: size as u64,
                    free,
                })?
            }
        };
        let mut n = heapless::String::new();
        // Fits: checked against NAME_MAX above.
        n.push_str(name)
            .map_err(|_| StoreError::NameTooLong { max: NAME_MAX })?;
        let generation = self.slots[i].generation;
        self.slots[i] = Slot {
            state: SlotState::Free,
            name: n,
            start,
            len: size,
            modified: 0,
            written: 0,
            generation,
        };
        self.slots[i].set(SlotState::Temp);
        Ok(i as FileId)
    }

    fn partial(&self, name: &str) -> Option<Partial> {
        let i = self
            .slots
            .iter()
            .position(|s| s.state == SlotState::Temp && s.name == name)?;
        let s = &self.slots[i];
        Some(Partial {
            id: i as FileId,
            size: s.len as u64,
            written: s.written as u64,
        })
    }

    fn next_partial(&self, after: Option<FileId>) -> Option<FileId> {
        let from = after.map_or(0, |a| usize::from(a) + 1);
        (from..FILES)
            .find(|&i| self.slots[i].state == SlotState::Temp)
            .map(|i| i as FileId)
    }

    fn read_partial(&self, tmp: FileId, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        let s = self.slot(tmp, SlotState::Temp)?;
        if offset >= s.written as u64 {
            return Ok(0);
        }
        let off = offset as usize;
        let n = buf.len().min(s.written - off);
        buf[..n].copy_from_slice(&self.arena.as_ref()[s.start + off..s.start + off + n]);
        Ok(n)
    }

    fn write(&mut self, tmp: FileId, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        let s = self.slot(tmp, SlotState::Temp)?;
        let end = offset.checked_add(data.len() as u64);
        if end.is_none_or(|e| e > s.len as u64) {
            return Err(StoreError::OutOfRange);
        }
        let at = s.start + offset as usize;
        let contiguous = offset as usize <= s.written;
        self.arena.as_mut()[at..at + data.len()].copy_from_slice(data);
        let s = &mut self.slots[usize::from(tmp)];
        if contiguous {
            s.written = s.written.max(offset as usize + data.len());
        }
        Ok(())
    }

    fn commit(&mut self, tmp: FileId, modified: u64, replace: bool) -> Result<(), StoreError> {
        self.slot(tmp, SlotState::Temp)?;
        let t = usize::from(tmp);
        if let Some(old) = self.find(&self.slots[t].name.clone()) {
            if !replace {
                return Err(StoreError::Exists);
            }
            self.slots[usize::from(old)].set(SlotState::Free);
        }
        self.slots[t].set(SlotState::File);
        self.slots[t].modified = modified;
        Ok(())
    }

    fn discard(&mut self, tmp: FileId) {
        if let Some(s) = self.slots.get_mut(usize::from(tmp)) {
            if s.state == SlotState::Temp {
                s.set(SlotState::Free);
            }
        }
    }

    fn remove(&mut self, id: FileId) -> Result<(), StoreError> {
        self.slot(id, SlotState::File)?;
        self.slots[usize::from(id)].set(SlotState::Free);
        Ok(())
    }

    fn recover(&mut self) {
        for s in &mut self.slots {
            if s.state == SlotState::Temp {
                s.set(SlotState::Free);
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn put<S: Store>(s: &mut S, name: &str, data: &[u8]) -> Result<FileId, StoreError> {
        let t = s.begin(name, data.len() as u64)?;
        s.write(t, 0, data)?;
        s.commit(t, 7, true)?;
        Ok(s.find(name).unwrap())
    }

    fn read_all<S: Store>(s: &S, name: &str) -> std::vec::Vec<u8> {
        extern crate std;
        let id = s.find(name).unwrap();
        let mut v = std::vec![0u8; s.meta(id).unwrap().size as usize];
        assert_eq!(s.read(id, 0, &mut v).unwrap(), v.len());
        v
    }

    extern crate std;

    #[test]
    fn temp_is_invisible_until_commit_and_replace_is_atomic() {
        let mut s = RamStore::<_, 4>::new([0u8; 64]);
        put(&mut s, "a", b"old").unwrap();
        let t = s.begin("a", 3).unwrap();
        s.write(t, 0, b"new").unwrap();
        assert_eq!(read_all(&s, "a"), b"old");
        assert_eq!(s.usage().pending, 1);
        assert_eq!(s.commit(t, 1, false), Err(StoreError::Exists));
        s.commit(t, 1, true).unwrap();
        assert_eq!(read_all(&s, "a"), b"new");
        assert_eq!(s.usage().files, 1);
        assert_eq!(s.usage().used, 3);
    }

    #[test]
    fn full_store_and_slots_are_reported() {
        let mut s = RamStore::<_, 2>::new([0u8; 16]);
        assert_eq!(
            s.begin("big", 17),
            Err(StoreError::NoSpace {
                needed: 17,
                free: 16
            })
        );
        put(&mut s, "x", &[1; 10]).unwrap();
        assert_eq!(
            s.begin("y", 7),
            Err(StoreError::NoSpace { needed: 7, free: 6 })
        );
        put(&mut s, "y", &[2; 6]).unwrap();
        assert_eq!(s.begin("z", 0), Err(StoreError::NoSlot { max: 2 }));
        assert_eq!(
            s.begin(&"n".repeat(NAME_MAX + 1), 0),
            Err(StoreError::NameTooLong { max: NAME_MAX })
        );
        assert_eq!(s.begin("a/b", 0), Err(StoreError::BadName));
        assert_eq!(s.begin("..", 0), Err(StoreError::BadName));
    }

    #[test]
    fn fragmented_space_is_compacted() {
        let mut s = RamStore::<_, 4>::new([0u8; 12]);
        put(&mut s, "a", &[1; 4]).unwrap();
        put(&mut s, "b", &[2; 4]).unwrap();
        put(&mut s, "c", &[3; 4]).unwrap();
        let a = s.find("a").unwrap();
        let c = s.find("c").unwrap();
        s.remove(a).unwrap();
        s.remove(c).unwrap();
        // 8 bytes free, in two holes of 4.
        put(&mut s, "d", &[4; 8]).unwrap();
        assert_eq!(read_all(&s, "b"), [2; 4]);
        assert_eq!(read_all(&s, "d"), [4; 8]);
    }

    #[test]
    fn writes_past_reservation_and_recover() {
        let mut s = RamStore::<_, 2>::new([0u8; 8]);
        let t = s.begin("a", 4).unwrap();
        assert_eq!(s.write(t, 2, b"abc"), Err(StoreError::OutOfRange));
        assert_eq!(s.write(t, u64::MAX, b"a"), Err(StoreError::OutOfRange));
        s.recover();
        assert_eq!(
            s.usage(),
            Usage {
                used: 0,
                capacity: 8,
                files: 0,
                pending: 0,
                max_files: 2
            }
        );
        assert_eq!(s.commit(t, 0, true), Err(StoreError::NotFound));
    }

    #[test]
    fn a_partial_upload_is_kept_and_readable_until_discarded() {
        let mut s = RamStore::<_, 4>::new([0u8; 32]);
        let t = s.begin("up", 10).unwrap();
        s.write(t, 0, b"hello").unwrap();
        s.write(t, 8, b"xy").unwrap(); // after a gap: not counted
        assert_eq!(
            s.partial("up"),
            Some(Partial {
                id: t,
                size: 10,
                written: 5
            })
        );
        let mut b = [0u8; 8];
        assert_eq!(s.read_partial(t, 0, &mut b).unwrap(), 5);
        assert_eq!(&b[..5], b"hello");
        assert_eq!(s.find("up"), None, "invisible until committed");
        s.discard(t);
        assert_eq!(s.partial("up"), None);
    }

    #[test]
    fn generations_change_with_the_file() {
        let mut s = RamStore::<_, 4>::new([0u8; 32]);
        let a = put(&mut s, "a", b"1").unwrap();
        let g = s.meta(a).unwrap().generation;
        let b = put(&mut s, "a", b"2").unwrap();
        assert!(a != b || s.meta(b).unwrap().generation != g);
        assert_eq!(
            s.meta(a).map(|m| m.generation == g),
            if a == b { Some(false) } else { None }
        );
    }

    #[test]
    fn iteration_and_reads() {
        let mut s = RamStore::<_, 4>::new([0u8; 32]);
        put(&mut s, "one", b"1").unwrap();
        put(&mut s, "two", b"22").unwrap();
        let mut names = std::vec::Vec::new();
        let mut cur = None;
        while let Some(id) = s.next(cur) {
            names.push(s.meta(id).unwrap().name);
            cur = Some(id);
        }
        assert_eq!(names, ["one", "two"]);
        let id = s.find("two").unwrap();
        let mut b = [0u8; 8];
        assert_eq!(s.read(id, 1, &mut b).unwrap(), 1);
        assert_eq!(s.read(id, 5, &mut b).unwrap(), 0);
        assert_eq!(s.meta(id).unwrap().modified, 7);
    }
}

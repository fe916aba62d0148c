//! The host's storage: files confined to the served root with cap-std,
//! for the engine's requests (every path arrives checked by the engine's
//! rules; confinement is cap-std's, so `..`, absolute paths and symlinks
//! that lead out fail by construction whatever reaches here).
//!
//! Blocking: called on blocking threads.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata, OpenOptions};
use sha2::{Digest as _, Sha256};
use tether_proto::message::EntryKind;
use tether_proto::server::{RelPath, PART_SUFFIX};
use tether_proto::ErrorCode;

/// Why an operation failed: the code and text of the request's Error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct Fail {
    /// The code.
    pub code: ErrorCode,
    /// The text.
    pub message: String,
}

impl Fail {
    /// A failure.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Fail {
            code,
            message: message.into(),
        }
    }
}

/// The served root.
#[derive(Debug)]
pub struct Root {
    dir: Dir,
    path: PathBuf,
}

impl Root {
    /// Open `path` as the root.
    pub fn open(path: &Path) -> io::Result<Root> {
        let dir = Dir::open_ambient_dir(path, ambient_authority())?;
        let path = crate::platform::canonicalize(path)?;
        Ok(Root { dir, path })
    }

    /// The root's path (commands run there).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A checked path as a relative path (`.` for the root).
pub fn rel(path: &RelPath<'_>) -> PathBuf {
    let mut p = PathBuf::from(".");
    for c in path.components() {
        p.push(c);
    }
    p
}

/// Relative paths at least this long are opened one directory at a time:
/// the OS takes at most PATH_MAX (4096) bytes with the NUL in one call, and
/// cap-std adds "./", so a 4095-byte path (the protocol's limit) would fail.
const LONG_PATH: usize = 2048;

/// The directory a path's last component is looked up in.
#[derive(Debug)]
pub enum Parent<'r> {
    /// The root itself (short paths are looked up from it in one call).
    Root(&'r Dir),
    /// A directory opened component by component (long paths).
    Sub(Dir),
}

impl std::ops::Deref for Parent<'_> {
    type Target = Dir;
    fn deref(&self) -> &Dir {
        match self {
            Parent::Root(d) => d,
            Parent::Sub(d) => d,
        }
    }
}

/// Where relative path `p` is: the directory to look it up in, and what to
/// look up there (`p` itself when short, else its last component).
pub fn locate<'r>(root: &'r Root, p: &Path) -> io::Result<(Parent<'r>, PathBuf)> {
    if p.as_os_str().len() < LONG_PATH {
        return Ok((Parent::Root(&root.dir), p.to_path_buf()));
    }
    let mut names: Vec<&std::ffi::OsStr> = p
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let last = names
        .pop()
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let mut dir = root.dir.try_clone()?;
    for n in names {
        dir = dir.open_dir(n)?;
    }
    Ok((Parent::Sub(dir), last))
}

/// `path` as messages show it: long paths keep their start and end.
pub fn shown(path: &RelPath<'_>) -> String {
    const MAX: usize = 120;
    let s = path.to_string();
    if s.len() <= MAX {
        return s;
    }
    let mut head = MAX / 2;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - MAX / 2;
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}…{} ({} bytes)", &s[..head], &s[tail..], s.len())
}

/// Turn an I/O error about `what` into the Error to answer with; the text
/// states the cause once.
pub fn io_fail(e: &io::Error, what: &str) -> Fail {
    use io::ErrorKind as K;
    let cause = plain(e);
    let (code, text) = match e.kind() {
        K::NotFound => (ErrorCode::NOT_FOUND, "no such file or directory".to_string()),
        K::AlreadyExists => (ErrorCode::EXISTS, "already exists".to_string()),
        K::PermissionDenied if cause.contains("outside of the filesystem") => {
            return Fail::new(
                ErrorCode::PATH_REFUSED,
                format!("path '{what}' refused: it leads outside the served root (through '..' or a symbolic link)"),
            )
        }
        K::PermissionDenied => (ErrorCode::PERMISSION_DENIED, "permission denied".into()),
        K::IsADirectory => (ErrorCode::IS_DIRECTORY, "is a directory".into()),
        K::NotADirectory => (ErrorCode::NOT_DIRECTORY, "a component of the path is not a directory".into()),
        K::StorageFull | K::QuotaExceeded => (ErrorCode::NO_SPACE, "no space left on the server's disk".into()),
        K::ReadOnlyFilesystem => (ErrorCode::READ_ONLY, "the server's file system is read-only".into()),
        K::DirectoryNotEmpty => (ErrorCode::NOT_EMPTY, "the directory is not empty; remove its entries first".into()),
        _ if e.raw_os_error() == Some(40) => {
            return Fail::new(
                ErrorCode::PATH_REFUSED,
                format!("path '{what}' refused: too many levels of symbolic links"),
            )
        }
        _ => (ErrorCode::IO, cause),
    };
    Fail::new(code, format!("'{what}': {text}"))
}

/// An OS error's text without the " (os error N)" suffix.
fn plain(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn modified(m: &Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// One entry, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEntry {
    /// Its name (one component).
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// Size (0 for directories; the target's length for a symlink).
    pub size: u64,
    /// Modification time, Unix seconds.
    pub modified: u64,
}

impl OwnedEntry {
    /// As the message's entry.
    pub fn as_entry(&self) -> tether_proto::Entry<'_> {
        tether_proto::Entry {
            name: &self.name,
            kind: self.kind,
            size: self.size,
            modified: self.modified,
        }
    }
}

fn entry(name: String, m: &Metadata) -> OwnedEntry {
    let ft = m.file_type();
    let kind = if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    };
    OwnedEntry {
        name,
        kind,
        size: if kind == EntryKind::Dir { 0 } else { m.len() },
        modified: modified(m),
    }
}

/// Describe one path (a symlink itself, not followed); named by its last
/// component (`.` for the root).
pub fn stat(root: &Root, path: &RelPath<'_>) -> Result<OwnedEntry, Fail> {
    let shown = shown(path);
    let (dir, p) = locate(root, &rel(path)).map_err(|e| io_fail(&e, &shown))?;
    let m = dir.symlink_metadata(p).map_err(|e| io_fail(&e, &shown))?;
    Ok(entry(path.name().to_string(), &m))
}

/// A directory's entries sorted by name in byte order, without partial
/// uploads and without names that are not UTF-8.
pub fn list(root: &Root, path: &RelPath<'_>) -> Result<Vec<OwnedEntry>, Fail> {
    let shown = shown(path);
    let (dir, p) = locate(root, &rel(path)).map_err(|e| io_fail(&e, &shown))?;
    let it = dir.read_dir(p).map_err(|e| io_fail(&e, &shown))?;
    let mut v = Vec::new();
    for e in it {
        let e = e.map_err(|e| io_fail(&e, &shown))?;
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if name.ends_with(PART_SUFFIX) {
            continue;
        }
        // An entry that vanished while listing is skipped.
        if let Ok(m) = e.metadata() {
            v.push(entry(name, &m));
        }
    }
    v.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(v)
}

/// Remove a file, a symlink or an empty directory.
pub fn remove(root: &Root, path: &RelPath<'_>) -> Result<(), Fail> {
    let shown = shown(path);
    let (dir, p) = locate(root, &rel(path)).map_err(|e| io_fail(&e, &shown))?;
    let m = dir.symlink_metadata(&p).map_err(|e| io_fail(&e, &shown))?;
    let r = if m.is_dir() {
        dir.remove_dir(&p)
    } else {
        dir.remove_file(&p)
    };
    r.map_err(|e| io_fail(&e, &shown))
}

/// What identifies a file's content: a Get checks it did not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    ino: (u64, u64),
    #[cfg(unix)]
    ctime: (i64, i64),
}

impl Identity {
    fn of(m: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        Identity {
            len: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            ino: (m.dev(), m.ino()),
            #[cfg(unix)]
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// A file opened for a Get.
#[derive(Debug)]
pub struct Reading {
    /// The open file.
    pub file: std::fs::File,
    /// Its path below the root, for the identity check and messages.
    pub path: PathBuf,
    /// The path as shown.
    pub shown: String,
    /// Its size when opened.
    pub size: u64,
    /// Its modification time.
    pub modified: u64,
    identity: Identity,
}

/// Open a regular file for reading.
pub fn open(root: &Root, path: &RelPath<'_>) -> Result<Reading, Fail> {
    let shown = shown(path);
    let p = rel(path);
    let (dir, at) = locate(root, &p).map_err(|e| io_fail(&e, &shown))?;
    let f = dir.open(at).map_err(|e| io_fail(&e, &shown))?;
    let m = f.metadata().map_err(|e| io_fail(&e, &shown))?;
    if m.is_dir() {
        return Err(Fail::new(
            ErrorCode::IS_DIRECTORY,
            format!("'{shown}' is a directory; name a file, or list it with `tether ls`"),
        ));
    }
    if !m.is_file() {
        return Err(Fail::new(
            ErrorCode::PERMISSION_DENIED,
            format!("'{shown}' is not a regular file"),
        ));
    }
    let modified = modified(&m);
    let file = f.into_std();
    let identity = Identity::of(&file.metadata().map_err(|e| io_fail(&e, &shown))?);
    Ok(Reading {
        size: identity.len,
        modified,
        file,
        path: p,
        shown,
        identity,
    })
}

impl Reading {
    /// SHA-256 over the first `n` bytes; leaves the position at `n`.
    pub fn hash_prefix(&mut self, n: u64, buf: &mut [u8]) -> Result<Sha256, Fail> {
        let fail = |e: &io::Error| io_fail(e, &self.shown);
        self.file.seek(SeekFrom::Start(0)).map_err(|e| fail(&e))?;
        let mut h = Sha256::new();
        let mut left = n;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let got = self.file.read(&mut buf[..want]).map_err(|e| fail(&e))?;
            if got == 0 {
                return Err(self.changed());
            }
            h.update(&buf[..got]);
            left -= got as u64;
        }
        Ok(h)
    }

    /// Read as much of `buf` as the file gives (0 at its end).
    pub fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, Fail> {
        let mut have = 0;
        while have < buf.len() {
            match self.file.read(&mut buf[have..]) {
                Ok(0) => break,
                Ok(n) => have += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_fail(&e, &self.shown)),
            }
        }
        Ok(have)
    }

    /// Whether the file (open, and at its path) is still the one opened:
    /// same size, modification and change times, same inode.
    pub fn check_unchanged(&self, root: &Root) -> Result<(), Fail> {
        let now = self.file.metadata().map_err(|e| io_fail(&e, &self.shown))?;
        // Replaced by another file (a rename over it): another inode.
        #[cfg(unix)]
        let same_path = {
            use cap_std::fs::MetadataExt as _;
            locate(root, &self.path)
                .and_then(|(dir, p)| dir.metadata(p))
                .map_or(true, |m| (m.dev(), m.ino()) == self.identity.ino)
        };
        #[cfg(not(unix))]
        let same_path = {
            let _ = root;
            true
        };
        if Identity::of(&now) != self.identity || !same_path {
            return Err(self.changed());
        }
        Ok(())
    }

    fn changed(&self) -> Fail {
        Fail::new(
            ErrorCode::CHANGED,
            format!(
                "'{}' changed while being sent; nothing was committed: run the get again",
                self.shown
            ),
        )
    }
}

/// The name of an upload's partial beside its destination: `.NAME.tether-part`,
/// or, where that would exceed the 255-byte name limit, a name made from the
/// name's SHA-256 (found again by a resumed upload all the same).
pub fn part_name(name: &str) -> String {
    let plain = format!(".{name}{PART_SUFFIX}");
    if plain.len() <= 255 {
        return plain;
    }
    let h = Sha256::digest(name.as_bytes());
    format!(".{}{PART_SUFFIX}", hex::encode(&h[..16]))
}

/// An upload in progress: the partial file beside the destination.
#[derive(Debug)]
pub struct Writing {
    dir: Dir,
    name: String,
    part: String,
    shown: String,
    file: std::fs::File,
    force: bool,
    /// Bytes the partial holds.
    pub offset: u64,
}

impl Writing {
    /// The same upload writing into `file` instead (tests give a file
    /// whose writes fail).
    #[cfg(test)]
    pub(crate) fn into_file(mut self, file: std::fs::File) -> Self {
        self.file = file;
        self
    }
}

/// Prepare an upload of `size` bytes to `path`: refuse an existing
/// destination without `force`, create missing parents, and take up (with
/// `resume`) or truncate the partial. Returns the writer and, when resuming,
/// SHA-256 state over the bytes kept.
pub fn create(
    root: &Root,
    path: &RelPath<'_>,
    size: u64,
    force: bool,
    resume: bool,
) -> Result<(Writing, Option<Sha256>), Fail> {
    let shown = shown(path);
    let p = rel(path);
    let (parent, name) = match (p.parent(), path.components().last()) {
        (Some(d), Some(n)) => (d.to_path_buf(), n.to_string()),
        _ => {
            return Err(Fail::new(
                ErrorCode::IS_DIRECTORY,
                "name a file to upload to",
            ))
        }
    };
    let part = part_name(&name);
    // What is there now decides before the space does, and before any
    // parent is created (checked again once the parent is open).
    if let Ok(m) = locate(root, &p).and_then(|(dir, at)| dir.symlink_metadata(at)) {
        refuse_existing(&m, force, &shown)?;
    }
    check_space(root, &parent.join(&part), size, resume)?;
    let dir = open_parent(root, &parent, &shown)?;
    match dir.symlink_metadata(&name) {
        Ok(m) => refuse_existing(&m, force, &shown)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_fail(&e, &shown)),
    }
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true);
    let mut file = dir
        .open_with(&part, &opts)
        .map_err(|e| io_fail(&e, &shown))?
        .into_std();
    let have = file.metadata().map_err(|e| io_fail(&e, &shown))?.len();
    let prefix = if resume && have > 0 && have <= size {
        let mut r = Reading {
            file,
            path: p,
            shown: shown.clone(),
            size: have,
            modified: 0,
            identity: Identity {
                len: 0,
                modified: None,
                #[cfg(unix)]
                ino: (0, 0),
                #[cfg(unix)]
                ctime: (0, 0),
            },
        };
        let h = r.hash_prefix(have, &mut vec![0u8; 256 * 1024])?;
        file = r.file;
        Some(h)
    } else {
        file.set_len(0).map_err(|e| io_fail(&e, &shown))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io_fail(&e, &shown))?;
        None
    };
    let offset = if prefix.is_some() { have } else { 0 };
    Ok((
        Writing {
            dir,
            name,
            part,
            shown,
            file,
            force,
            offset,
        },
        prefix,
    ))
}

/// An upload's destination that exists: a directory is refused, a file
/// unless `force`.
fn refuse_existing(m: &Metadata, force: bool, shown: &str) -> Result<(), Fail> {
    if m.is_dir() {
        return Err(Fail::new(
            ErrorCode::IS_DIRECTORY,
            format!("'{shown}' is a directory; name a file inside it"),
        ));
    }
    if !force {
        return Err(Fail::new(
            ErrorCode::EXISTS,
            format!("'{shown}' already exists on the server (use --force to replace it)"),
        ));
    }
    Ok(())
}

/// Refuse an upload of `size` bytes that the root's file system has no room
/// for (`NO_SPACE` at the Put, before anything is created): the bytes still
/// to come (less a partial at `part` that a resumed upload takes up) against
/// the space available to this process.
fn check_space(root: &Root, part: &Path, size: u64, resume: bool) -> Result<(), Fail> {
    let Some(free) = crate::platform::free_space(&root.dir, &root.path) else {
        return Ok(());
    };
    let kept = match locate(root, part).and_then(|(dir, p)| dir.symlink_metadata(p)) {
        Ok(m) if resume && m.is_file() && m.len() <= size => m.len(),
        _ => 0,
    };
    let needed = size - kept;
    if needed > free {
        return Err(Fail::new(
            ErrorCode::NO_SPACE,
            format!("not enough space: {needed} bytes needed, {free} free"),
        ));
    }
    Ok(())
}

/// The upload's directory, created (with its parents) when missing.
fn open_parent(root: &Root, parent: &Path, shown: &str) -> Result<Dir, Fail> {
    let open = || locate(root, parent).and_then(|(dir, p)| dir.open_dir(p));
    match open() {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_dirs(root, parent).map_err(|e| io_fail(&e, shown))?;
            open().map_err(|e| io_fail(&e, shown))
        }
        Err(e) => Err(io_fail(&e, shown)),
    }
}

/// `create_dir_all` one component at a time (any length).
fn create_dirs(root: &Root, parent: &Path) -> io::Result<()> {
    if parent.as_os_str().len() < LONG_PATH {
        return root.dir.create_dir_all(parent);
    }
    let mut dir = root.dir.try_clone()?;
    for c in parent.components() {
        let std::path::Component::Normal(n) = c else {
            continue;
        };
        match dir.create_dir(n) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        dir = dir.open_dir(n)?;
    }
    Ok(())
}

impl Writing {
    /// Append bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<(), Fail> {
        self.file
            .write_all(data)
            .map_err(|e| io_fail(&e, &self.shown))?;
        self.offset += data.len() as u64;
        Ok(())
    }

    /// Make the partial durable and rename it to the destination (refusing
    /// to replace one that appeared meanwhile unless `force`).
    pub fn commit(self) -> Result<(), Fail> {
        self.file.sync_all().map_err(|e| io_fail(&e, &self.shown))?;
        if !self.force && self.dir.symlink_metadata(&self.name).is_ok() {
            return Err(Fail::new(
                ErrorCode::EXISTS,
                format!(
                    "'{}' appeared on the server during the upload; the upload is kept as a partial: run the put again with --force to replace it",
                    self.shown
                ),
            ));
        }
        self.dir
            .rename(&self.part, &self.dir, &self.name)
            .map_err(|e| io_fail(&e, &self.shown))?;
        // Make the rename durable too (best effort).
        if let Ok(d) = self.dir.try_clone() {
            let _ = d.into_std_file().sync_all();
        }
        Ok(())
    }

    /// Keep the partial for resuming (made durable, best effort).
    pub fn keep(self) {
        let _ = self.file.sync_data();
    }

    /// Delete the partial (its content is known to be wrong).
    pub fn discard(self) {
        let _ = self.dir.remove_file(&self.part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_stay_within_the_name_limit() {
        assert_eq!(part_name("a.bin"), ".a.bin.tether-part");
        for n in [242usize, 243, 255] {
            let name = "d".repeat(n);
            let p = part_name(&name);
            assert!(p.len() <= 255, "{n}: {}", p.len());
            assert!(p.ends_with(PART_SUFFIX));
            assert_eq!(p, part_name(&name), "stable, so a resume finds it");
        }
    }

    #[test]
    fn paths_of_the_protocols_full_length_work() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let rules = tether_proto::server::PathRules {
            max_name: 255,
            max_path: 4095,
            dirs: true,
        };
        let text = ["d"; 2047].join("/") + "/f";
        assert_eq!(text.len(), 4095);
        let path = rules.check(&text, true).unwrap();
        let (mut w, _) = create(&root, &path, 3, false, false).unwrap();
        w.write(b"abc").unwrap();
        w.commit().unwrap();
        assert_eq!(stat(&root, &path).unwrap().size, 3);
        let mut r = open(&root, &path).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(r.read_full(&mut buf).unwrap(), 3);
        r.check_unchanged(&root).unwrap();
        let parent = rules.check(&text[..text.len() - 2], true).unwrap();
        assert_eq!(list(&root, &parent).unwrap().len(), 1);
        remove(&root, &path).unwrap();
        let f = stat(&root, &path).unwrap_err();
        assert_eq!(f.code, ErrorCode::NOT_FOUND);
        assert!(
            f.message.len() < 200 && f.message.contains("(4095 bytes)"),
            "{}",
            f.message
        );
    }

    #[test]
    fn an_upload_larger_than_the_free_space_is_refused_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let rules = tether_proto::server::PathRules {
            max_name: 255,
            max_path: 4095,
            dirs: true,
        };
        let path = rules.check("sub/huge.bin", true).unwrap();
        let f = create(&root, &path, 1 << 63, false, false).unwrap_err();
        assert_eq!(f.code, ErrorCode::NO_SPACE);
        assert!(
            f.message
                .starts_with("not enough space: 9223372036854775808 bytes needed, "),
            "{}",
            f.message
        );
        assert!(f.message.ends_with(" free"), "{}", f.message);
        // Nothing was created: no parent, no partial.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        // What fits goes ahead.
        let (w, prefix) = create(&root, &path, 10, false, false).unwrap();
        assert!(prefix.is_none());
        w.discard();
    }

    #[test]
    fn causes_are_stated_once() {
        let e = io::Error::from(io::ErrorKind::NotFound);
        let f = io_fail(&e, "a/b");
        assert_eq!(f.code, ErrorCode::NOT_FOUND);
        assert_eq!(f.message, "'a/b': no such file or directory");
        let e = io::Error::from_raw_os_error(5);
        assert_eq!(io_fail(&e, "x").message, "'x': Input/output error");
    }
}

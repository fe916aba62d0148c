//! Files confined to the served root: path checks, Stat, List, Remove, and
//! the blocking halves of Get and Put.
//!
//! Confinement is cap-std's: every path is resolved beneath the root's
//! directory handle, so `..`, absolute paths and symlinks pointing out fail
//! by construction. The checks in [`check_path`] come first only to give a
//! clear reason for the common forms and to refuse names the OS would
//! misread (control characters, backslashes, drive prefixes).

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata, OpenOptions};
use sha2::{Digest as _, Sha256};
use tether_proto::message::EntryKind;
use tether_proto::ErrorCode;

use super::ReqError;
use crate::conn::OwnedEntry;
use crate::PART_SUFFIX;

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
        let path = std::fs::canonicalize(path)?;
        Ok(Root { dir, path })
    }

    /// The root's path (commands run there).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root directory handle.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }
}

/// A checked path below the root: normalized components joined with `/`
/// (empty for the root itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelPath(pub String);

impl RelPath {
    /// As a path (`.` for the root).
    pub fn as_path(&self) -> &Path {
        if self.0.is_empty() {
            Path::new(".")
        } else {
            Path::new(&self.0)
        }
    }

    /// Parent directory and last component; `None` for the root.
    pub fn split(&self) -> Option<(&Path, &str)> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.rsplit_once('/') {
            Some((p, n)) => (Path::new(p), n),
            None => (Path::new("."), self.0.as_str()),
        })
    }
}

/// Longest path accepted, in bytes (the usual PATH_MAX less its NUL).
pub const MAX_PATH: usize = 4095;

fn refused(msg: String) -> ReqError {
    ReqError::new(ErrorCode::PATH_REFUSED, msg)
}

/// Check a requested path. `file` demands a path that names something below
/// the root (not the root itself).
pub fn check_path(p: &str, file: bool) -> Result<RelPath, ReqError> {
    if p.len() > MAX_PATH {
        return Err(refused(format!(
            "path of {} bytes refused: it is too long (the limit is {MAX_PATH} bytes)",
            p.len()
        )));
    }
    if p.chars().any(|c| c.is_control()) {
        return Err(refused(format!(
            "path {p:?} refused: it contains control characters"
        )));
    }
    if p.contains('\\') {
        return Err(refused(format!(
            "path {p:?} refused: backslashes are not path separators here (use '/')"
        )));
    }
    if p.starts_with('/') {
        return Err(refused(format!(
            "path {p:?} refused: absolute paths are not allowed, paths are relative to the served root"
        )));
    }
    let b = p.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Err(refused(format!(
            "path {p:?} refused: it looks like a drive path; paths are relative to the served root"
        )));
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(refused(format!(
                    "path {p:?} refused: '..' may not be used to leave the served root"
                )))
            }
            c if c.len() > 255 => {
                return Err(refused(format!(
                    "path {p:?} refused: a name is longer than 255 bytes"
                )))
            }
            c => parts.push(c),
        }
    }
    if file && parts.is_empty() {
        return Err(ReqError::new(
            ErrorCode::IS_DIRECTORY,
            format!("path {p:?} is the served root itself; name a file below it"),
        ));
    }
    Ok(RelPath(parts.join("/")))
}

/// Turn an I/O error about `what` into the error to answer with.
pub fn io_error(e: &io::Error, what: &str) -> ReqError {
    use io::ErrorKind as K;
    let text = e.to_string();
    let code = match e.kind() {
        K::NotFound => ErrorCode::NOT_FOUND,
        K::AlreadyExists => ErrorCode::EXISTS,
        K::PermissionDenied if text.contains("outside of the filesystem") => {
            return refused(format!(
                "path '{what}' refused: it leads outside the served root (through '..' or a symbolic link)"
            ))
        }
        K::PermissionDenied => ErrorCode::PERMISSION_DENIED,
        K::IsADirectory => ErrorCode::IS_DIRECTORY,
        K::NotADirectory => ErrorCode::NOT_DIRECTORY,
        K::StorageFull | K::QuotaExceeded => ErrorCode::NO_SPACE,
        K::ReadOnlyFilesystem => ErrorCode::READ_ONLY,
        K::DirectoryNotEmpty => ErrorCode::IO,
        _ => match e.raw_os_error() {
            Some(40) => {
                // ELOOP: a symlink loop or a refused symlink.
                return refused(format!(
                    "path '{what}' refused: too many levels of symbolic links"
                ));
            }
            _ => ErrorCode::IO,
        },
    };
    ReqError::new(code, format!("'{what}': {text}"))
}

fn shown(p: &RelPath) -> &str {
    if p.0.is_empty() {
        "."
    } else {
        &p.0
    }
}

fn modified(m: &Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
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

/// Describe one path (symlinks are not followed).
pub fn stat(root: &Root, path: &RelPath) -> Result<OwnedEntry, ReqError> {
    let m = root
        .dir
        .symlink_metadata(path.as_path())
        .map_err(|e| io_error(&e, shown(path)))?;
    Ok(entry(shown(path).to_string(), &m))
}

/// Stream a directory's entries to `each` (in the order the OS returns them);
/// returns the count. Stops early when `each` returns false.
pub fn list(
    root: &Root,
    path: &RelPath,
    mut each: impl FnMut(OwnedEntry) -> bool,
) -> Result<u64, ReqError> {
    let it = root
        .dir
        .read_dir(path.as_path())
        .map_err(|e| io_error(&e, shown(path)))?;
    let mut n = 0u64;
    for e in it {
        let e = e.map_err(|e| io_error(&e, shown(path)))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let m = match e.metadata() {
            Ok(m) => m,
            // Vanished while listing.
            Err(_) => continue,
        };
        n += 1;
        if !each(entry(name, &m)) {
            break;
        }
    }
    Ok(n)
}

/// Remove a file, symlink or empty directory.
pub fn remove(root: &Root, path: &RelPath) -> Result<(), ReqError> {
    if path.0.is_empty() {
        return Err(refused("the served root itself cannot be removed".into()));
    }
    let m = root
        .dir
        .symlink_metadata(path.as_path())
        .map_err(|e| io_error(&e, shown(path)))?;
    let r = if m.is_dir() {
        root.dir.remove_dir(path.as_path())
    } else {
        root.dir.remove_file(path.as_path())
    };
    r.map_err(|e| {
        if e.kind() == io::ErrorKind::DirectoryNotEmpty {
            ReqError::new(
                ErrorCode::IO,
                format!(
                    "'{}' is a directory that is not empty; remove its entries first",
                    shown(path)
                ),
            )
        } else {
            io_error(&e, shown(path))
        }
    })
}

/// A file opened for a Get.
#[derive(Debug)]
pub struct GetFile {
    /// The open file.
    pub file: std::fs::File,
    /// Its size when opened.
    pub size: u64,
    /// Its modification time.
    pub modified: u64,
}

/// Open a regular file for reading.
pub fn open_get(root: &Root, path: &RelPath) -> Result<GetFile, ReqError> {
    let m = root
        .dir
        .metadata(path.as_path())
        .map_err(|e| io_error(&e, shown(path)))?;
    if m.is_dir() {
        return Err(ReqError::new(
            ErrorCode::IS_DIRECTORY,
            format!(
                "'{}' is a directory; name a file, or list it with `tether ls`",
                shown(path)
            ),
        ));
    }
    if !m.is_file() {
        return Err(ReqError::new(
            ErrorCode::PERMISSION_DENIED,
            format!("'{}' is not a regular file", shown(path)),
        ));
    }
    let f = root
        .dir
        .open(path.as_path())
        .map_err(|e| io_error(&e, shown(path)))?;
    let m = f.metadata().map_err(|e| io_error(&e, shown(path)))?;
    Ok(GetFile {
        size: m.len(),
        modified: modified(&m),
        file: f.into_std(),
    })
}

/// Hash the first `n` bytes of `file` (from its start), leaving the position at `n`.
pub fn hash_prefix(file: &mut std::fs::File, n: u64, buf: &mut [u8]) -> io::Result<Sha256> {
    file.seek(SeekFrom::Start(0))?;
    let mut h = Sha256::new();
    let mut left = n;
    while left > 0 {
        let want = (left.min(buf.len() as u64)) as usize;
        let got = file.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is shorter than expected",
            ));
        }
        h.update(&buf[..got]);
        left -= got as u64;
    }
    Ok(h)
}

/// An upload in progress: the partial file beside the destination.
#[derive(Debug)]
pub struct PutTarget {
    /// The destination's directory.
    pub dir: Dir,
    /// The destination's name.
    pub name: String,
    /// The partial's name (`.NAME.tether-part`).
    pub part: String,
    /// The partial, positioned at `offset`.
    pub file: std::fs::File,
    /// Bytes the partial holds.
    pub offset: u64,
    /// Hash of those bytes.
    pub hasher: Sha256,
}

/// Prepare an upload of `size` bytes to `path`: check the destination, and
/// open (resume) or create (truncate) the partial beside it.
pub fn open_put(
    root: &Root,
    path: &RelPath,
    size: u64,
    force: bool,
    resume: bool,
) -> Result<PutTarget, ReqError> {
    let (parent, name) = path
        .split()
        .ok_or_else(|| refused("name a file to upload to".into()))?;
    if name.ends_with(PART_SUFFIX) {
        return Err(refused(format!(
            "path '{}' refused: names ending in '{PART_SUFFIX}' are reserved for partial uploads",
            path.0
        )));
    }
    let ptext = parent.to_string_lossy();
    let dir = match root.dir.open_dir(parent) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            root.dir
                .create_dir_all(parent)
                .map_err(|e| io_error(&e, &ptext))?;
            root.dir
                .open_dir(parent)
                .map_err(|e| io_error(&e, &ptext))?
        }
        Err(e) => return Err(io_error(&e, &ptext)),
    };
    match dir.symlink_metadata(name) {
        Ok(m) if m.is_dir() => {
            return Err(ReqError::new(
                ErrorCode::IS_DIRECTORY,
                format!("'{}' is a directory; name a file inside it", path.0),
            ))
        }
        Ok(_) if !force => {
            return Err(ReqError::new(
                ErrorCode::EXISTS,
                format!("'{}' already exists on the server", path.0),
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&e, &path.0)),
    }
    let part = format!(".{name}{PART_SUFFIX}");
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true);
    let file = dir
        .open_with(&part, &opts)
        .map_err(|e| io_error(&e, &path.0))?;
    let mut file = file.into_std();
    let have = file.metadata().map_err(|e| io_error(&e, &path.0))?.len();
    let mut buf = vec![0u8; 256 * 1024];
    let (offset, hasher) = if resume && have > 0 && have <= size {
        let h = hash_prefix(&mut file, have, &mut buf).map_err(|e| io_error(&e, &path.0))?;
        (have, h)
    } else {
        file.set_len(0).map_err(|e| io_error(&e, &path.0))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io_error(&e, &path.0))?;
        (0, Sha256::new())
    };
    Ok(PutTarget {
        dir,
        name: name.to_string(),
        part,
        file,
        offset,
        hasher,
    })
}

impl PutTarget {
    /// Append verified bytes.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.hasher.update(data);
        self.file.write_all(data)?;
        self.offset += data.len() as u64;
        Ok(())
    }

    /// Make the partial durable and rename it to the destination (refusing
    /// to replace one that appeared meanwhile unless `force`).
    pub fn commit(self, force: bool, shown: &str) -> Result<(), ReqError> {
        self.file.sync_all().map_err(|e| io_error(&e, shown))?;
        if !force && self.dir.symlink_metadata(&self.name).is_ok() {
            return Err(ReqError::new(
                ErrorCode::EXISTS,
                format!("'{shown}' appeared on the server during the upload; the upload is kept as a partial, pass --force to replace it"),
            ));
        }
        self.dir
            .rename(&self.part, &self.dir, &self.name)
            .map_err(|e| io_error(&e, shown))?;
        // Make the rename durable too (best effort).
        if let Ok(d) = self.dir.try_clone() {
            let _ = d.into_std_file().sync_all();
        }
        Ok(())
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
    fn path_forms() {
        assert_eq!(check_path("a/./b//c", true).unwrap().0, "a/b/c");
        assert_eq!(check_path("", false).unwrap().0, "");
        assert!(check_path("", true).is_err());
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a\\..\\b",
            "a\nb",
            "C:x",
            "..",
        ] {
            let e = check_path(bad, true).unwrap_err();
            assert_eq!(e.code, ErrorCode::PATH_REFUSED, "{bad}");
        }
        let r = RelPath("a/b".into());
        assert_eq!(r.split(), Some((Path::new("a"), "b")));
        let r = RelPath("b".into());
        assert_eq!(r.split(), Some((Path::new("."), "b")));
    }
}

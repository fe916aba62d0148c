//! A file read on a blocking thread for a network task: hash a prefix,
//! stream the bytes with a bounded read-ahead, check the file did not
//! change. The server's Get and the client's Put both read this way.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::mpsc;

use sha2::{Digest as _, Sha256};
use tether_proto::ErrorCode;

use crate::server::files::Fail;

/// Bytes read at once, and chunks read ahead of what was sent.
pub const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the reader and the network.
pub const READ_AHEAD: usize = 3;

/// What the reader is asked.
#[derive(Debug, Clone, Copy)]
pub enum ReadCmd {
    /// SHA-256 over the first n bytes.
    Hash(u64),
    /// Stream the bytes from this offset to the size opened with.
    Stream(u64),
    /// Is the file still the one opened?
    Check,
}

/// What the reader answers.
#[derive(Debug)]
pub enum ReadDone {
    /// The prefix's hash state.
    Prefix(Result<Sha256, Fail>),
    /// File bytes (an empty chunk: the file ended early).
    Chunk(Result<Vec<u8>, Fail>),
    /// Whether the file is unchanged.
    Unchanged(Result<(), Fail>),
}

/// A file as the reader sees it.
pub trait Source: Read + Seek {
    /// Its size when opened.
    fn size(&self) -> u64;
    /// How the file is named in messages.
    fn shown(&self) -> &str;
    /// `CHANGED` if the file is not the one opened any more.
    fn check_unchanged(&self) -> Result<(), Fail>;
}

fn io_fail(e: &io::Error, shown: &str) -> Fail {
    crate::server::files::io_fail(e, shown)
}

/// The `CHANGED` failure for `shown`.
pub fn changed(shown: &str) -> Fail {
    Fail::new(
        ErrorCode::CHANGED,
        format!("'{shown}' changed while being sent; nothing was committed: run it again"),
    )
}

/// Serve `cmds` until they stop (the requester is gone); chunks are read
/// into buffers that come back through `credits`.
pub fn serve(
    file: &mut impl Source,
    cmds: &mpsc::Receiver<ReadCmd>,
    credits: &mpsc::Receiver<Vec<u8>>,
    send: &dyn Fn(ReadDone) -> bool,
) {
    while let Ok(cmd) = cmds.recv() {
        let ok = match cmd {
            ReadCmd::Hash(n) => send(ReadDone::Prefix(hash_prefix(file, n))),
            ReadCmd::Stream(from) => stream(file, from, credits, send),
            ReadCmd::Check => send(ReadDone::Unchanged(file.check_unchanged())),
        };
        if !ok {
            return;
        }
    }
}

fn read_full(file: &mut impl Source, buf: &mut [u8]) -> Result<usize, Fail> {
    let mut have = 0;
    while have < buf.len() {
        match file.read(&mut buf[have..]) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_fail(&e, file.shown())),
        }
    }
    Ok(have)
}

/// SHA-256 over the first `n` bytes.
pub fn hash_prefix(file: &mut impl Source, n: u64) -> Result<Sha256, Fail> {
    file.seek(SeekFrom::Start(0))
        .map_err(|e| io_fail(&e, file.shown()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = n;
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        let got = read_full(file, &mut buf[..want])?;
        if got == 0 {
            return Err(changed(file.shown()));
        }
        h.update(&buf[..got]);
        left -= got as u64;
    }
    Ok(h)
}

fn stream(
    file: &mut impl Source,
    from: u64,
    credits: &mpsc::Receiver<Vec<u8>>,
    send: &dyn Fn(ReadDone) -> bool,
) -> bool {
    if let Err(e) = file.seek(SeekFrom::Start(from)) {
        return send(ReadDone::Chunk(Err(io_fail(&e, file.shown()))));
    }
    let mut left = file.size().saturating_sub(from);
    while left > 0 {
        let Ok(mut buf) = credits.recv() else {
            return false;
        };
        buf.resize(CHUNK, 0);
        let want = left.min(CHUNK as u64) as usize;
        match read_full(file, &mut buf[..want]) {
            Ok(n) => {
                buf.truncate(n);
                left -= n as u64;
                if !send(ReadDone::Chunk(Ok(buf))) {
                    return false;
                }
                if n == 0 {
                    return true;
                }
            }
            Err(f) => return send(ReadDone::Chunk(Err(f))),
        }
    }
    true
}

/// The requester's end: commands out, credits back.
#[derive(Debug)]
pub struct Reader {
    /// Commands to the thread.
    pub cmds: mpsc::Sender<ReadCmd>,
    /// Buffers given back.
    pub credits: mpsc::Sender<Vec<u8>>,
}

/// Start a reader thread over `file` (opened by `open` on that thread);
/// its answers go to `send`.
pub fn start<S: Source + 'static>(
    open: impl FnOnce() -> Result<S, Fail> + Send + 'static,
    opened: impl FnOnce(&Result<S, Fail>) -> bool + Send + 'static,
    send: impl Fn(ReadDone) -> bool + Send + 'static,
) -> Reader {
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let (credit_tx, credit_rx) = mpsc::channel();
    for _ in 0..READ_AHEAD {
        let _ = credit_tx.send(vec![0u8; CHUNK]);
    }
    tokio::task::spawn_blocking(move || {
        let r = open();
        if !opened(&r) {
            return;
        }
        if let Ok(mut f) = r {
            serve(&mut f, &cmd_rx, &credit_rx, &send);
        }
    });
    Reader {
        cmds: cmd_tx,
        credits: credit_tx,
    }
}

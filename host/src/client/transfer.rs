//! `tether get` and `tether put`: streamed in constant memory, SHA-256
//! verified end to end (hashed while reading or receiving, never in a
//! second pass), resumable, and atomic (the destination name only ever holds
//! a complete, verified file).
//!
//! The network side runs on the async task; file reading or writing and
//! hashing run on one blocking thread; chunks circulate between them through
//! a small [`Pool`], so at most a few chunk buffers exist per transfer.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tether_proto::{Digest, Message};
use tokio::sync::mpsc;

use super::Session;
use crate::conn::Msg;
use crate::error::Error;
use crate::pool::{Chunk, Pool};
use crate::progress::Progress;
use crate::PART_SUFFIX;

/// Options of a transfer.
#[derive(Debug, Clone, Default)]
pub struct TransferOpts {
    /// Replace an existing destination.
    pub force: bool,
    /// Continue from a partial left by an earlier attempt.
    pub resume: bool,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
    /// Limit the transfer to this many bytes per second.
    pub limit_rate: Option<u64>,
}

/// What a finished transfer did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Size of the whole file.
    pub size: u64,
    /// Bytes that were already in place (resumed from).
    pub resumed_at: u64,
    /// Bytes that crossed the network this time.
    pub transferred: u64,
    /// SHA-256 of the whole file.
    pub digest: Digest,
    /// Time taken.
    pub elapsed: Duration,
    /// A partial was found but did not match, so the transfer started over.
    pub restarted: bool,
}

/// The partial download beside `local`: `LOCAL.tether-part`.
pub fn part_path(local: &Path) -> PathBuf {
    let mut s = local.as_os_str().to_owned();
    s.push(PART_SUFFIX);
    PathBuf::from(s)
}

/// Paces a transfer to a byte rate.
struct Throttle {
    rate: Option<u64>,
    start: tokio::time::Instant,
    bytes: u64,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Self {
        Throttle {
            rate,
            start: tokio::time::Instant::now(),
            bytes: 0,
        }
    }
    async fn account(&mut self, n: usize) {
        let Some(rate) = self.rate else { return };
        self.bytes += n as u64;
        let due = self.start + Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        tokio::time::sleep_until(due).await;
    }
}

fn hash_file_prefix(file: &mut File, n: u64) -> io::Result<Sha256> {
    file.seek(SeekFrom::Start(0))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = n;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let got = file.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while being read",
            ));
        }
        h.update(&buf[..got]);
        left -= got as u64;
    }
    Ok(h)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(t) => t,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// After a Cancel, read the request's frames up to its last one.
async fn drain_request(sess: &mut Session, id: u32) -> Result<(), Error> {
    loop {
        let inc = sess.recv(id).await?;
        match inc.msg {
            Msg::Error { .. } | Msg::Done { .. } => return Ok(()),
            _ => {}
        }
    }
}

/// Download `remote` to `local`.
pub async fn get(
    sess: &mut Session,
    remote: &str,
    local: &Path,
    opts: &TransferOpts,
) -> Result<Report, Error> {
    if local.symlink_metadata().is_ok() && !opts.force {
        return Err(Error::Exists(local.to_path_buf()));
    }
    let part = part_path(local);
    let p2 = part.clone();
    let resume = opts.resume;
    let (file, have, hasher) = blocking(move || -> io::Result<(File, u64, Sha256)> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p2)?;
        let len = f.metadata()?.len();
        if resume && len > 0 {
            let h = hash_file_prefix(&mut f, len)?;
            Ok((f, len, h))
        } else {
            f.set_len(0)?;
            Ok((f, 0, Sha256::new()))
        }
    })
    .await
    .map_err(|e| Error::local("cannot open the partial download", &part, e))?;
    let t0 = Instant::now();
    let (mut file, mut have, mut hasher) = (file, have, hasher);
    let mut restarted = false;
    loop {
        let id = sess.next_id();
        sess.send(
            id,
            Message::Get {
                path: remote,
                offset: have,
            },
            &[],
        )
        .await?;
        let (size, start, prefix) = match sess.recv(id).await?.msg {
            Msg::FileInfo {
                size,
                offset,
                prefix_sha256,
                ..
            } => (size, offset, prefix_sha256),
            other => return Err(sess.unexpected(other, "FileInfo")),
        };
        let mismatch = if start == 0 {
            have > 0
        } else {
            start != have || prefix != Some(hasher.clone().finalize().into())
        };
        if mismatch {
            if start > 0 {
                // The partial is not a prefix of the remote file: start over.
                sess.send(0, Message::Cancel { target: id }, &[]).await?;
                drain_request(sess, id).await?;
            }
            tracing::info!("the partial download does not match the remote file; starting over");
            file.set_len(0)
                .map_err(|e| Error::local("cannot truncate", &part, e))?;
            have = 0;
            hasher = Sha256::new();
            restarted = true;
            if start > 0 {
                continue;
            }
        }
        let resumed_at = have;
        file.seek(SeekFrom::Start(have))
            .map_err(|e| Error::local("cannot seek in", &part, e))?;
        let progress = Progress::new(opts.progress, "get", size, have);
        let r = receive(sess, id, file, hasher, size, have, opts, &progress, &part).await;
        progress.finish();
        let (f, digest, received) = r?;
        // Verified: make it durable, then put it in place.
        f.sync_all()
            .map_err(|e| Error::local("cannot sync", &part, e))?;
        drop(f);
        if local.symlink_metadata().is_ok() && !opts.force {
            return Err(Error::Exists(local.to_path_buf()));
        }
        std::fs::rename(&part, local)
            .map_err(|e| Error::local("cannot rename the verified download to", local, e))?;
        return Ok(Report {
            size,
            resumed_at,
            transferred: received,
            digest,
            elapsed: t0.elapsed(),
            restarted,
        });
    }
}

type WriterResult = Result<(File, Sha256), io::Error>;

#[allow(clippy::too_many_arguments)]
async fn receive(
    sess: &mut Session,
    id: u32,
    file: File,
    hasher: Sha256,
    size: u64,
    start: u64,
    opts: &TransferOpts,
    progress: &Progress,
    part: &Path,
) -> Result<(File, Digest, u64), Error> {
    let pool = Pool::new(sess.max_chunk);
    let ret = pool.returner();
    let (tx, mut rx) = mpsc::channel::<Chunk>(4);
    let writer = tokio::task::spawn_blocking(move || -> WriterResult {
        let (mut file, mut hasher) = (file, hasher);
        while let Some(c) = rx.blocking_recv() {
            hasher.update(c.bytes());
            file.write_all(c.bytes())?;
            ret.give(c.buf);
        }
        Ok((file, hasher))
    });
    let mut throttle = Throttle::new(opts.limit_rate);
    let mut got = start;
    let fail_writer = |writer: tokio::task::JoinHandle<WriterResult>| async move {
        match writer.await {
            Ok(Err(e)) => Error::local("cannot write", part, e),
            _ => Error::local(
                "cannot write",
                part,
                io::Error::other("the writer thread ended"),
            ),
        }
    };
    loop {
        let inc = sess.recv(id).await?;
        match inc.msg {
            Msg::Data => {
                if got + inc.body_len > size {
                    return Err(sess.protocol(format!(
                        "the server sent more than the announced {size} bytes"
                    )));
                }
                let mut buf = pool.take();
                if inc.body_len as usize > buf.len() {
                    return Err(
                        sess.protocol("a data frame exceeds the negotiated chunk size".into())
                    );
                }
                let n = sess.body(&mut buf[..inc.body_len as usize]).await?;
                got += n as u64;
                progress.inc(n as u64);
                if tx.send(Chunk { buf, len: n }).await.is_err() {
                    return Err(fail_writer(writer).await);
                }
                throttle.account(n).await;
            }
            Msg::Done { bytes, sha256 } => {
                drop(tx);
                let (file, hasher) = match writer.await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => return Err(Error::local("cannot write", part, e)),
                    Err(_) => {
                        return Err(Error::local(
                            "cannot write",
                            part,
                            io::Error::other("the writer thread failed"),
                        ))
                    }
                };
                let digest: Digest = hasher.finalize().into();
                if bytes != size || got != size {
                    return Err(sess.protocol(format!(
                        "announced {size} bytes, received {got}, Done says {bytes}"
                    )));
                }
                if sha256 != Some(digest) {
                    drop(file);
                    let _ = std::fs::remove_file(part);
                    return Err(Error::DigestMismatch {
                        path: part.display().to_string(),
                        expected: sha256.map(hex::encode).unwrap_or_else(|| "none".into()),
                        got: hex::encode(digest),
                    });
                }
                return Ok((file, digest, got - start));
            }
            other => return Err(sess.unexpected(other, "Data or Done")),
        }
    }
}

/// What the reading thread of a put hands over.
enum FromFile {
    Chunk(Chunk),
    End(Digest),
    Fail(io::Error),
}

/// Upload `local` to `remote`.
pub async fn put(
    sess: &mut Session,
    local: &Path,
    remote: &str,
    opts: &TransferOpts,
) -> Result<Report, Error> {
    let file = File::open(local).map_err(|e| Error::local("cannot open", local, e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::local("cannot read", local, e))?;
    if !meta.is_file() {
        return Err(Error::local(
            "cannot upload",
            local,
            io::Error::other("not a regular file"),
        ));
    }
    let size = meta.len();
    let t0 = Instant::now();
    let mut resume = opts.resume;
    let mut restarted = false;
    let mut file = file;
    loop {
        let id = sess.next_id();
        sess.send(
            id,
            Message::Put {
                path: remote,
                size,
                force: opts.force,
                resume,
            },
            &[],
        )
        .await?;
        let (offset, prefix) = match sess.recv(id).await?.msg {
            Msg::PutReady {
                offset,
                prefix_sha256,
            } => (offset, prefix_sha256),
            other => return Err(sess.unexpected(other, "PutReady")),
        };
        let mut hasher = Sha256::new();
        if offset > 0 {
            let ok = offset <= size && {
                let mut f = file
                    .try_clone()
                    .map_err(|e| Error::local("cannot read", local, e))?;
                let h = blocking(move || hash_file_prefix(&mut f, offset).map(|h| (f, h)))
                    .await
                    .map_err(|e| Error::local("cannot read", local, e))?;
                file = h.0;
                hasher = h.1;
                prefix == Some(hasher.clone().finalize().into())
            };
            if !ok {
                tracing::info!("the server's partial upload does not match; starting over");
                sess.send(0, Message::Cancel { target: id }, &[]).await?;
                drain_request(sess, id).await?;
                resume = false;
                restarted = true;
                continue;
            }
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::local("cannot seek in", local, e))?;
        let progress = Progress::new(opts.progress, "put", size, offset);
        let f = file
            .try_clone()
            .map_err(|e| Error::local("cannot read", local, e))?;
        let r = send(
            sess,
            id,
            f,
            hasher,
            (size - offset, size),
            opts,
            &progress,
            local,
        )
        .await;
        progress.finish();
        let digest = r?;
        match sess.recv(id).await?.msg {
            Msg::Done { bytes, sha256 } => {
                if bytes != size || sha256 != Some(digest) {
                    return Err(sess.protocol(format!(
                        "the server confirmed {bytes} bytes with digest {}, expected {size} bytes with {}",
                        sha256.map(hex::encode).unwrap_or_default(),
                        hex::encode(digest)
                    )));
                }
            }
            other => return Err(sess.unexpected(other, "Done")),
        }
        return Ok(Report {
            size,
            resumed_at: offset,
            transferred: size - offset,
            digest,
            elapsed: t0.elapsed(),
            restarted,
        });
    }
}

enum Ev {
    Net(Result<crate::conn::Incoming, Error>),
    File(Option<FromFile>),
}

#[allow(clippy::too_many_arguments)]
async fn send(
    sess: &mut Session,
    id: u32,
    file: File,
    hasher: Sha256,
    (len, total): (u64, u64),
    opts: &TransferOpts,
    progress: &Progress,
    local: &Path,
) -> Result<Digest, Error> {
    let pool = Pool::new(sess.max_chunk);
    let ret = pool.returner();
    let (tx, mut rx) = mpsc::channel::<FromFile>(4);
    tokio::task::spawn_blocking(move || {
        let (mut file, mut hasher) = (file, hasher);
        let mut left = len;
        while left > 0 {
            let mut buf = pool.take();
            let want = left.min(buf.len() as u64) as usize;
            let mut have = 0;
            while have < want {
                match file.read(&mut buf[have..want]) {
                    Ok(0) => break,
                    Ok(n) => have += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(FromFile::Fail(e));
                        return;
                    }
                }
            }
            if have < want {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while being uploaded",
                );
                let _ = tx.blocking_send(FromFile::Fail(e));
                return;
            }
            hasher.update(&buf[..have]);
            left -= have as u64;
            if tx
                .blocking_send(FromFile::Chunk(Chunk { buf, len: have }))
                .is_err()
            {
                return;
            }
        }
        let _ = tx.blocking_send(FromFile::End(hasher.finalize().into()));
    });
    let mut throttle = Throttle::new(opts.limit_rate);
    loop {
        let ev = tokio::select! {
            biased;
            r = sess.recv(id) => Ev::Net(r),
            m = rx.recv() => Ev::File(m),
        };
        match ev {
            // The server only speaks before our Done to refuse.
            Ev::Net(r) => {
                let inc = r?;
                return Err(sess.unexpected(inc.msg, "no reply while sending"));
            }
            Ev::File(Some(FromFile::Chunk(c))) => {
                sess.send(id, Message::Data, c.bytes()).await?;
                progress.inc(c.len as u64);
                throttle.account(c.len).await;
                ret.give(c.buf);
            }
            Ev::File(Some(FromFile::End(d))) => {
                sess.send(
                    id,
                    Message::Done {
                        bytes: total,
                        sha256: Some(d),
                    },
                    &[],
                )
                .await?;
                return Ok(d);
            }
            Ev::File(Some(FromFile::Fail(e))) => {
                let _ = sess.send(0, Message::Cancel { target: id }, &[]).await;
                return Err(Error::local("cannot read", local, e));
            }
            Ev::File(None) => {
                return Err(Error::local(
                    "cannot read",
                    local,
                    io::Error::other("the reader thread ended"),
                ))
            }
        }
    }
}

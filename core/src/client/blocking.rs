//! The client engine driven over a blocking `embedded_io::{Read, Write}`
//! transport: a TCP socket, a serial port, an in-memory pipe. No heap; the
//! caller gives the transport, the buffers ([`ClientBuffers`]), a fresh
//! nonce and a clock.
//!
//! One call is one request, run to its end: the call writes the request,
//! reads the replies, hands output, entries or file bytes to the caller's
//! closure as they arrive (verified first on a sealed session), and returns
//! the result. A closure may answer [`Flow::Cancel`] to stop the request.
//!
//! ```no_run
//! use tether_proto::client::blocking::Client;
//! use tether_proto::client::{ClientBuffers, ClientConfig, PutOptions};
//! use tether_proto::Command;
//!
//! fn demo<T: embedded_io::Read + embedded_io::Write>(tcp: T, key: [u8; 32], nonce: [u8; 16], now: fn() -> u64)
//!     -> Result<(), tether_proto::client::Error<T::Error>>
//! {
//!     let cfg = ClientConfig { key: Some(key), ..ClientConfig::DEFAULT };
//!     let mut mem = [0u8; 8 * 1024];
//!     let bufs = ClientBuffers::split(&mut mem, &cfg).expect("room");
//!     let mut c = Client::connect(tcp, cfg, bufs, nonce, now)?;
//!     c.ping(1)?;
//!     let status = c.exec(Command::Shell("uptime"), None, |_stream, bytes| {
//!         let _ = bytes; // print them
//!     })?;
//!     let sent = c.put_slice("hello.txt", b"hello\n", PutOptions { force: true, resume: false })?;
//!     let mut back = [0u8; 6];
//!     let got = c.get_with("hello.txt", None, |at, bytes| {
//!         back[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
//!     })?;
//!     assert_eq!(got.sha256, sent.sha256);
//!     let _ = status;
//!     Ok(())
//! }
//! ```
//!
//! The handshake deadline ([`ClientConfig::handshake_timeout_ms`]) is
//! checked each time the transport returns; a transport that can block
//! for ever needs its own timeout (a socket's read timeout, say).

use crate::message::{Command, Entry, ExitStatus, Stream};

use super::driver::{
    ops, ClientBuffers, Clock, Core, EntryInfo, Error, Flow, Handler, Next, OnEvent, PutOptions,
    ReadSource, Session, SinkWriter, SliceSource, Time, Transfer,
};
use super::{ClientConfig, Request, Resume, Uploads};

/// A connected client over a blocking transport `T`, with the caller's
/// buffers and clock `C`.
pub struct Client<'b, T, C> {
    io: T,
    core: Core<'b, C>,
    /// Bytes were written since the last flush.
    unflushed: bool,
}

impl<T, C> core::fmt::Debug for Client<'_, T, C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client")
            .field("session", &self.core.session)
            .finish_non_exhaustive()
    }
}

/// Write all of `data`; a write of nothing means the peer is gone.
fn write_all<W: embedded_io::Write>(w: &mut W, mut data: &[u8]) -> Result<(), Error<W::Error>> {
    while !data.is_empty() {
        match w.write(data).map_err(Error::Io)? {
            0 => return Err(Error::Closed),
            n => data = &data[n..],
        }
    }
    Ok(())
}

impl<'b, T, C> Client<'b, T, C>
where
    T: embedded_io::Read + embedded_io::Write,
    C: Clock,
{
    /// A client over `io` (already connected), the caller's buffers and
    /// clock; nothing is sent until [`handshake`](Self::handshake).
    pub fn new(
        io: T,
        cfg: ClientConfig,
        bufs: ClientBuffers<'b>,
        clock: C,
    ) -> Result<Self, Error<T::Error>> {
        let core = Core::new(cfg, bufs, clock).map_err(|()| Error::Buffer)?;
        Ok(Client {
            io,
            core,
            unflushed: false,
        })
    }

    /// Run the handshake: Hello, with a key Auth, until the server
    /// accepted. `nonce` must be fresh and unpredictable (a TRNG's, or a
    /// CSPRNG's seeded from one). On failure [`message`](Self::message)
    /// says why, in the server's words when it refused.
    pub fn handshake(&mut self, nonce: [u8; 16]) -> Result<(), Error<T::Error>> {
        self.core.begin_connect(nonce)?;
        self.run(&mut (), ops::Connect)
    }

    /// [`new`](Self::new) and [`handshake`](Self::handshake) in one call;
    /// `clock` gives the time for the handshake deadline.
    pub fn connect(
        io: T,
        cfg: ClientConfig,
        bufs: ClientBuffers<'b>,
        nonce: [u8; 16],
        clock: C,
    ) -> Result<Self, Error<T::Error>> {
        let mut c = Self::new(io, cfg, bufs, clock)?;
        c.handshake(nonce)?;
        Ok(c)
    }

    /// The server, as it announced itself, and the session's protection
    /// (once the handshake completed).
    pub fn session(&self) -> Option<&Session> {
        self.core.session.as_ref()
    }

    /// The text of the last error: the server's message, or what this
    /// side found wrong (empty if none came with it).
    pub fn message(&self) -> &str {
        self.core.text.as_str()
    }

    /// Whether requests can still be made (no error ended the connection).
    pub fn is_usable(&self) -> bool {
        self.core.usable()
    }

    /// The transport.
    pub fn transport(&mut self) -> &mut T {
        &mut self.io
    }

    /// Give back the transport (to close it).
    pub fn into_transport(self) -> T {
        self.io
    }

    fn run<H: Handler>(
        &mut self,
        up: &mut dyn Uploads,
        mut h: H,
    ) -> Result<H::Output, Error<T::Error>> {
        let ended = self.pump(up, &mut h);
        h.finish(ended)
    }

    /// Run the current call to its end (one copy for every operation).
    fn pump(&mut self, up: &mut dyn Uploads, h: &mut dyn OnEvent) -> Result<(), Error<T::Error>> {
        loop {
            let next = match self.core.step(up, h) {
                Ok(n) => n,
                Err(e) => {
                    self.core.end();
                    return Err(e);
                }
            };
            let io = match next {
                Next::Done => {
                    self.core.end();
                    return self.core.outcome();
                }
                Next::Write(n) => {
                    self.unflushed = true;
                    write_all(&mut self.io, &self.core.tx[..n])
                }
                Next::Read => self.read(),
            };
            if let Err(e) = io {
                self.core.broken();
                return Err(e);
            }
        }
    }

    fn read(&mut self) -> Result<(), Error<T::Error>> {
        if self.unflushed {
            self.io.flush().map_err(Error::Io)?;
            self.unflushed = false;
        }
        match self.io.read(self.core.rx_space()).map_err(Error::Io)? {
            0 => Err(Error::Closed),
            n => {
                self.core.received(n);
                Ok(())
            }
        }
    }

    /// Ping; returns the stamp echoed.
    pub fn ping(&mut self, stamp: u64) -> Result<u64, Error<T::Error>> {
        self.core.begin(Request::Ping { stamp })?;
        self.run(&mut (), ops::Ping::default())
    }

    /// Echo `text`; the server's answer is copied into `out` (cut to fit).
    pub fn echo<'o>(&mut self, text: &str, out: &'o mut [u8]) -> Result<&'o str, Error<T::Error>> {
        self.core.begin(Request::Echo { text })?;
        self.run(&mut (), ops::Echo { out, len: None })
    }

    /// The server's time (`format`: the core's dialect, empty for the
    /// default); its text is copied into `out` (cut to fit).
    pub fn time<'o>(
        &mut self,
        format: &str,
        out: &'o mut [u8],
    ) -> Result<Time<'o>, Error<T::Error>> {
        self.core.begin(Request::Time { format })?;
        self.run(&mut (), ops::TimeOp { out, got: None })
    }

    /// Run `command` (killed by the server after `timeout_ms`, if given);
    /// its output goes to `on_output` as it arrives. Returns how it ended.
    pub fn exec<F, R>(
        &mut self,
        command: Command<'_>,
        timeout_ms: Option<u32>,
        on_output: F,
    ) -> Result<ExitStatus, Error<T::Error>>
    where
        F: FnMut(Stream, &[u8]) -> R,
        R: Into<Flow>,
    {
        self.core.begin(Request::Exec {
            command,
            timeout_ms,
        })?;
        self.run(
            &mut (),
            ops::Exec {
                f: on_output,
                status: None,
            },
        )
    }

    /// Describe `path`.
    pub fn stat(&mut self, path: &str) -> Result<EntryInfo, Error<T::Error>> {
        self.core.begin(Request::Stat { path })?;
        self.run(&mut (), ops::Stat::default())
    }

    /// List the directory `path` (`""`: the root): each entry to
    /// `on_entry`. Returns how many there were.
    pub fn list<F, R>(&mut self, path: &str, on_entry: F) -> Result<u64, Error<T::Error>>
    where
        F: FnMut(&Entry<'_>) -> R,
        R: Into<Flow>,
    {
        self.core.begin(Request::List { path })?;
        self.run(
            &mut (),
            ops::List {
                f: on_entry,
                count: None,
            },
        )
    }

    /// Download `path` into `sink`, in order. With `resume` (the bytes
    /// `sink` already holds: their count and SHA-256 state) only the rest
    /// is sent, after the server checked the prefix; a prefix that differs
    /// ends with [`Error::ResumeMismatch`] (start `sink` over and call
    /// again without). Returns the size and the verified SHA-256 of the
    /// whole file. A failed write cancels ([`Error::Sink`]).
    pub fn get<W: embedded_io::Write>(
        &mut self,
        path: &str,
        resume: Option<Resume>,
        sink: &mut W,
    ) -> Result<Transfer, Error<T::Error>> {
        let strict = resume.as_ref().map(|r| r.offset);
        self.core.begin(Request::Get { path, resume })?;
        let mut w = SinkWriter {
            w: sink,
            failed: None,
        };
        let r = self.run(&mut (), ops::Get::new(|_, b: &[u8]| w.write(b), strict));
        match (r, w.failed) {
            (Err(Error::Cancelled), Some(k)) => Err(Error::Sink(k)),
            (r, _) => r,
        }
    }

    /// Download `path`, each piece to `on_data` with its offset in the
    /// file. With `resume` the first piece starts at the resume offset, or
    /// at 0 when the server's file is shorter than the partial (start the
    /// partial over then). Returns the size and verified SHA-256.
    ///
    /// The bytes are verified as a whole only at the end: keep them aside
    /// (a temporary file) until this returns `Ok`.
    pub fn get_with<F, R>(
        &mut self,
        path: &str,
        resume: Option<Resume>,
        on_data: F,
    ) -> Result<Transfer, Error<T::Error>>
    where
        F: FnMut(u64, &[u8]) -> R,
        R: Into<Flow>,
    {
        self.core.begin(Request::Get { path, resume })?;
        self.run(&mut (), ops::Get::new(on_data, None))
    }

    /// Upload `size` bytes read from `source` to `path`. Returns the size
    /// and the SHA-256 the server confirmed (equal to the one computed
    /// here over the bytes sent). Nothing is committed unless every byte
    /// arrived and verified.
    pub fn put<S: embedded_io::Read>(
        &mut self,
        path: &str,
        size: u64,
        source: S,
        opts: PutOptions,
    ) -> Result<Transfer, Error<T::Error>> {
        self.core.begin(Request::Put {
            path,
            size,
            force: opts.force,
            resume: opts.resume,
        })?;
        let mut src = ReadSource::new(source);
        let r = self.run(&mut src, ops::Put::default());
        match (r, src.failed) {
            (Err(Error::Local(_)), Some(k)) => Err(Error::Source(k)),
            (r, _) => r,
        }
    }

    /// Upload `data` to `path` (see [`put`](Self::put)).
    pub fn put_slice(
        &mut self,
        path: &str,
        data: &[u8],
        opts: PutOptions,
    ) -> Result<Transfer, Error<T::Error>> {
        self.core.begin(Request::Put {
            path,
            size: data.len() as u64,
            force: opts.force,
            resume: opts.resume,
        })?;
        self.run(&mut SliceSource(data), ops::Put::default())
    }

    /// Remove the file (or empty directory) `path`.
    pub fn remove(&mut self, path: &str) -> Result<(), Error<T::Error>> {
        self.core.begin(Request::Remove { path })?;
        self.run(&mut (), ops::Remove::default())
    }
}

#[cfg(feature = "alloc")]
impl<T, C> Client<'_, T, C>
where
    T: embedded_io::Read + embedded_io::Write,
    C: Clock,
{
    /// Run `command` and collect its output.
    pub fn exec_output(
        &mut self,
        command: Command<'_>,
        timeout_ms: Option<u32>,
    ) -> Result<super::ExecOutput, Error<T::Error>> {
        let (mut stdout, mut stderr) = (alloc::vec::Vec::new(), alloc::vec::Vec::new());
        let status = self.exec(command, timeout_ms, |s, b| match s {
            Stream::Stdout => stdout.extend_from_slice(b),
            Stream::Stderr => stderr.extend_from_slice(b),
        })?;
        Ok(super::ExecOutput {
            status,
            stdout,
            stderr,
        })
    }

    /// Download a whole file into memory; returns it with its transfer.
    pub fn get_vec(
        &mut self,
        path: &str,
    ) -> Result<(alloc::vec::Vec<u8>, Transfer), Error<T::Error>> {
        let mut v = alloc::vec::Vec::new();
        let t = self.get_with(path, None, |_, b| v.extend_from_slice(b))?;
        Ok((v, t))
    }

    /// List a directory into memory.
    pub fn list_vec(
        &mut self,
        path: &str,
    ) -> Result<alloc::vec::Vec<super::OwnedEntry>, Error<T::Error>> {
        let mut v = alloc::vec::Vec::new();
        self.list(path, |e| v.push(e.into()))?;
        Ok(v)
    }
}

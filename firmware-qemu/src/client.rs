//! The device as a tether client: the `push` and `fetch` jobs run here, in
//! one task, over an embassy-net `TcpSocket` with the core's async client
//! driver (`tether_proto::client::asynch`). The command queues the job
//! ([`submit`]); `jobs` prints how the last one is going or ended
//! ([`status`]). The device's provisioned key is the client's: with one,
//! the server must hold the same key and every frame is sealed.
//!
//! A push reads the file from the store as it is sent (the store is
//! borrowed per read, so the device keeps serving); the SHA-256 of what
//! was read is computed here and must be the one the server confirms. A
//! fetch stats the file, reserves that much in the store, writes what
//! arrives into the reservation and commits it only once the engine
//! verified size and SHA-256; anything else drops it.

use core::cell::RefCell;
use core::fmt::Write as _;

use board::job::{Job, Kind};
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpEndpoint, Ipv4Address, Stack};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::signal::Signal;
use embassy_time::Duration;
use embedded_io::ErrorKind;
use tether_proto::client::asynch::Client;
use tether_proto::client::Error;
use tether_proto::client::{ClientBuffers, ClientConfig, PutOptions, Transfer};
use tether_proto::handshake::KEY_LEN;
use tether_proto::text::Text;

use crate::log;
use crate::serve::{FileRef, NewFile, Shared};
use crate::time::now_ms;

/// The client's TCP socket buffers.
pub const SOCK_RX: usize = 4096;
pub const SOCK_TX: usize = 4096;

/// What the client offers: 512-byte headers, 2 KiB chunks (a sealed
/// body is held whole until its tag verifies).
const CONFIG: ClientConfig = ClientConfig {
    agent: concat!("tether-qemu-client/", env!("CARGO_PKG_VERSION")),
    max_header: 512,
    max_chunk: 2048,
    key: Some([0; KEY_LEN]),
    ..ClientConfig::DEFAULT
};

/// The driver's buffers (sized for a key: with none the frame buffer is
/// unused).
pub const ARENA: usize = ClientBuffers::arena_len(&CONFIG, 1024);

/// Everything the client task owns.
pub struct ClientMem {
    arena: [u8; ARENA],
    rx: [u8; SOCK_RX],
    tx: [u8; SOCK_TX],
}

impl ClientMem {
    pub const fn new() -> Self {
        ClientMem {
            arena: [0; ARENA],
            rx: [0; SOCK_RX],
            tx: [0; SOCK_TX],
        }
    }
}

/// The job to run, with its number.
static NEXT: Signal<CriticalSectionRawMutex, (u32, Job)> = Signal::new();

/// How the last job is going.
struct State {
    seq: u32,
    busy: bool,
    line: Text<256>,
}

static STATE: Mutex<CriticalSectionRawMutex, RefCell<State>> = Mutex::new(RefCell::new(State {
    seq: 0,
    busy: false,
    line: Text::new(),
}));

/// Queue `job` (one at a time); returns its number.
pub fn submit(job: &Job) -> Result<u32, &'static str> {
    STATE.lock(|s| {
        let mut s = s.borrow_mut();
        if s.busy {
            return Err("a job is running (see `jobs`)");
        }
        s.seq += 1;
        s.busy = true;
        let seq = s.seq;
        s.line = Text::new();
        let _ = write!(s.line, "job {seq}: {job}: running");
        NEXT.signal((seq, job.clone()));
        Ok(seq)
    })
}

/// Write how the last job is going or ended.
pub fn status(out: &mut impl core::fmt::Write) {
    STATE.lock(|s| {
        let s = s.borrow();
        if s.seq == 0 {
            let _ = writeln!(out, "no job yet");
        } else {
            let _ = writeln!(out, "{}", s.line);
        }
    })
}

/// A line of what happened (cut to fit).
type Line = Text<200>;

macro_rules! line {
    ($($arg:tt)*) => {{
        let mut l = Line::new();
        let _ = write!(l, $($arg)*);
        l
    }};
}

/// The client task: runs each job as it comes.
#[embassy_executor::task]
pub async fn client_task(
    stack: Stack<'static>,
    sh: &'static Shared,
    key: Option<[u8; KEY_LEN]>,
    mem: &'static mut ClientMem,
) {
    loop {
        let (seq, job) = NEXT.wait().await;
        log!("job {seq}: {job}");
        let t0 = now_ms();
        let r = run(stack, sh, key, &job, mem).await;
        let ms = now_ms() - t0;
        let mut line = Text::<256>::new();
        let _ = write!(line, "job {seq}: {job}: ");
        let _ = match &r {
            Ok((t, sealed)) => write!(
                line,
                "done: {} B in {ms} ms, sha256 {}, {}",
                t.size,
                Hex(&t.sha256),
                if *sealed { "sealed" } else { "open" }
            ),
            Err(why) => write!(line, "failed: {why}"),
        };
        log!("{line}");
        STATE.lock(|s| {
            let mut s = s.borrow_mut();
            s.line = line;
            s.busy = false;
        });
    }
}

/// Bytes as lower-case hex.
struct Hex<'a>(&'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Connect, run the job, close.
async fn run(
    stack: Stack<'static>,
    sh: &Shared,
    key: Option<[u8; KEY_LEN]>,
    job: &Job,
    mem: &mut ClientMem,
) -> Result<(Transfer, bool), Line> {
    let mut sock = TcpSocket::new(stack, &mut mem.rx, &mut mem.tx);
    sock.set_nagle_enabled(false);
    // Bounds every wait of the transfer (and the handshake's).
    sock.set_timeout(Some(Duration::from_secs(20)));
    let [a, b, c, d] = job.ip;
    let ep = IpEndpoint::new(Ipv4Address::new(a, b, c, d).into(), job.port);
    let r = match sock.connect(ep).await {
        Ok(()) => transfer(&mut sock, sh, key, job, &mut mem.arena).await,
        Err(e) => Err(line!("cannot connect: {e:?}")),
    };
    sock.close();
    let _ = embassy_time::with_timeout(Duration::from_secs(2), sock.flush()).await;
    sock.abort();
    let _ = embassy_time::with_timeout(Duration::from_millis(100), sock.flush()).await;
    r
}

async fn transfer(
    sock: &mut TcpSocket<'_>,
    sh: &Shared,
    key: Option<[u8; KEY_LEN]>,
    job: &Job,
    arena: &mut [u8],
) -> Result<(Transfer, bool), Line> {
    let cfg = ClientConfig { key, ..CONFIG };
    let bufs =
        ClientBuffers::split(arena, &cfg).ok_or_else(|| line!("client buffers too small"))?;
    let mut c = Client::new(sock, cfg, bufs, now_ms).map_err(|e| line!("{e}"))?;
    // What went wrong, with the text that came with it.
    macro_rules! why {
        ($c:expr, $e:expr) => {{
            let (e, m) = ($e, $c.message());
            // A handshake error's text is its own.
            match m.is_empty() || matches!(e, Error::Handshake(_)) {
                true => line!("{e}"),
                false => line!("{e}: {m}"),
            }
        }};
    }
    if let Err(e) = c.handshake(crate::rng::nonce()).await {
        return Err(why!(c, e));
    }
    let sealed = c.session().is_some_and(|s| s.authenticated);
    let t = match job.kind {
        Kind::Push => {
            let f = sh
                .file(&job.local)
                .ok_or_else(|| line!("no such file: {}", job.local))?;
            let src = StoreReader { sh, f, pos: 0 };
            let opts = PutOptions {
                force: true,
                resume: false,
            };
            c.put(&job.remote, f.size, src, opts)
                .await
                .map_err(|e| why!(c, e))?
        }
        Kind::Fetch => {
            let size = c.stat(&job.remote).await.map_err(|e| why!(c, e))?.size;
            let new = sh
                .begin_file(&job.local, size)
                .map_err(|e| line!("{}: {e}", job.local))?;
            let mut w = StoreWriter { sh, new, pos: 0 };
            let r = c.get(&job.remote, None, &mut w).await;
            match r {
                // The file on the server changed size since the stat.
                Ok(t) if t.size != size => {
                    sh.discard_file(w.new);
                    return Err(line!(
                        "the file changed while fetched: {} B, not {size}",
                        t.size
                    ));
                }
                Ok(t) => {
                    sh.commit_file(w.new, now_ms())
                        .map_err(|e| line!("{}: {e}", job.local))?;
                    t
                }
                Err(e) => {
                    sh.discard_file(w.new);
                    return Err(why!(c, e));
                }
            }
        }
    };
    Ok((t, sealed))
}

/// A stored file as an `embedded_io::Read`, from its start.
struct StoreReader<'a> {
    sh: &'a Shared,
    f: FileRef,
    pos: u64,
}

impl embedded_io::ErrorType for StoreReader<'_> {
    type Error = ErrorKind;
}

impl embedded_io::Read for StoreReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        // A file replaced or removed meanwhile fails the upload.
        let n = self
            .sh
            .read_file(&self.f, self.pos, buf)
            .map_err(|_| ErrorKind::InvalidData)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A reserved file as an `embedded_io::Write`, in order.
struct StoreWriter<'a> {
    sh: &'a Shared,
    new: NewFile,
    pos: u64,
}

impl embedded_io::ErrorType for StoreWriter<'_> {
    type Error = ErrorKind;
}

impl embedded_io::Write for StoreWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        self.sh
            .write_file(&self.new, self.pos, buf)
            .map_err(|_| ErrorKind::OutOfMemory)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

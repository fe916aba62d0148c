//! The glue to tether's device logic: the only module that names
//! `tether_proto::device`. Everything else (NIC, UART, network stack,
//! links) talks to [`Shared`] and [`Conn`], so a new engine is re-pointed
//! here alone.
//!
//! Call order (what the links do): [`Shared::new`] at boot; per connection
//! [`Conn::open`], then [`Conn::feed`] / [`Conn::emit`] while either moves
//! bytes, [`Conn::tick`] at [`Conn::deadline`], [`Conn::close`] when
//! [`Conn::should_close`] or the peer left; datagrams through
//! [`Shared::answer_datagram`]; after any of these, [`Shared::poll_events`].

use core::cell::{Cell, RefCell};
use core::fmt::Write as _;

use sha2::{Digest as _, Sha256};
use tether_proto::device::commands::{Cmd, Ctx, Output, Table};
use tether_proto::device::{
    Clock, Config, Device, DeviceConn, Event, FileId, OffsetClock, Peer, RamStore, Store as _,
};
use tether_proto::handshake::KEY_LEN;
use tether_proto::http::{FileInfo, Status};

pub use tether_proto::device::StoreError;

/// Most files the store holds.
pub const STORE_FILES: usize = 16;

/// The store: RAM standing in for flash.
type Store = RamStore<&'static mut [u8], STORE_FILES>;

/// Unix time when the provisioning block carried it (the RTC), else none.
#[derive(Debug, Clone, Copy)]
pub struct WallClock(pub Option<OffsetClock>);

impl Clock for WallClock {
    fn unix_ms(&self, now_ms: u64) -> Option<u64> {
        self.0.and_then(|c| c.unix_ms(now_ms))
    }
}

type Dev = Device<Store, WallClock, Table<'static, ()>>;

/// What the firmware decides at boot.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Pre-shared key: every connection must authenticate.
    pub key: Option<[u8; KEY_LEN]>,
    /// Unix milliseconds at monotonic time 0, if known.
    pub unix_ms_at_boot: Option<u64>,
    /// Largest frame body.
    pub max_chunk: u32,
    /// The firmware's RAM by use, for the `mem` command.
    pub ram: &'static [(&'static str, usize)],
}

/// Something the board must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoardEvent {
    /// Drive the user LED.
    Led(bool),
}

/// What every session shares: the device logic and its store.
pub struct Shared {
    dev: RefCell<Dev>,
    open: Cell<usize>,
    reboot: Cell<bool>,
}

impl Shared {
    /// Boot the device logic at `now_ms` over the store `arena`.
    pub fn new(s: Settings, arena: &'static mut [u8], now_ms: u64) -> Self {
        let config = Config {
            agent: concat!("tether-qemu/", env!("CARGO_PKG_VERSION")),
            max_chunk: s.max_chunk,
            extra_ram: s.ram,
            key: s.key,
            ..Config::DEFAULT
        };
        let clock = WallClock(s.unix_ms_at_boot.map(|offset_ms| OffsetClock { offset_ms }));
        let commands = Table {
            state: (),
            commands: &COMMANDS,
        };
        let dev = Device::new(config, RamStore::new(arena), clock, commands, now_ms);
        Shared {
            dev: RefCell::new(dev),
            open: Cell::new(0),
            reboot: Cell::new(false),
        }
    }

    /// Answer one UDP datagram into `reply`; returns the reply's length (0: none).
    pub fn answer_datagram(&self, req: &[u8], now_ms: u64, reply: &mut [u8]) -> usize {
        self.dev.borrow_mut().handle_datagram(req, now_ms, reply)
    }

    /// The next board event. A reboot request is kept internally: see
    /// [`Shared::reboot_pending`].
    pub fn poll_events(&self) -> Option<BoardEvent> {
        let mut dev = self.dev.borrow_mut();
        loop {
            match dev.poll_event()? {
                Event::Led(on) => return Some(BoardEvent::Led(on)),
                Event::Reboot => self.reboot.set(true),
                _ => {}
            }
        }
    }

    /// A reboot was requested: sessions stop reading, flush and close.
    pub fn reboot_pending(&self) -> bool {
        self.reboot.get()
    }

    /// Complete a requested reboot once no session is open (soft: device
    /// state and counters reset, files kept); returns whether it did.
    pub fn finish_reboot(&self, now_ms: u64) -> bool {
        if !self.reboot.get() || self.open.get() > 0 {
            return false;
        }
        self.dev.borrow_mut().handle_reboot(now_ms);
        self.reboot.set(false);
        true
    }
}

/// The status page ([`crate::http`]) reads the device through [`Shared`]
/// only: it changes nothing.
impl Shared {
    /// Run `f` with what the page shows at `now_ms` (`ip`: the device's
    /// address; `http_requests`: answered so far). File names are listed on
    /// an unkeyed device only.
    pub fn with_page<R>(
        &self,
        ip: [u8; 4],
        http_requests: u64,
        now_ms: u64,
        f: impl FnOnce(&Status<'_>) -> R,
    ) -> R {
        let dev = self.dev.borrow();
        let mut files = heapless::Vec::<FileInfo<'_>, STORE_FILES>::new();
        dev.page_files(|fi| {
            let _ = files.push(fi);
        });
        let open = self.open.get() as u32;
        f(&dev.page_status(&files, Some(ip), open, http_requests, now_ms))
    }
}

/// A committed file, as the client reads it.
#[derive(Debug, Clone, Copy)]
pub struct FileRef {
    id: FileId,
    generation: u32,
    /// Its size in bytes.
    pub size: u64,
}

/// A file being written by the client: invisible until committed.
#[derive(Debug)]
pub struct NewFile(FileId);

/// The store, for the device's own client (`push`, `fetch`). Every call
/// borrows the device only for its duration, so a transfer interleaves
/// with the sessions the device serves.
impl Shared {
    /// The committed file `name`.
    pub fn file(&self, name: &str) -> Option<FileRef> {
        let dev = self.dev.borrow();
        let id = dev.store.find(name)?;
        let m = dev.store.meta(id)?;
        Some(FileRef {
            id,
            generation: m.generation,
            size: m.size,
        })
    }

    /// Bytes of `f` from `offset`; `Err(NotFound)` if it was replaced or
    /// removed since it was looked up.
    pub fn read_file(&self, f: &FileRef, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        let dev = self.dev.borrow();
        match dev.store.meta(f.id) {
            Some(m) if m.generation == f.generation => dev.store.read(f.id, offset, buf),
            _ => Err(StoreError::NotFound),
        }
    }

    /// Reserve `size` bytes for a new file `name` (refused while an upload
    /// to that name is in progress or kept for resuming).
    pub fn begin_file(&self, name: &str, size: u64) -> Result<NewFile, StoreError> {
        let mut dev = self.dev.borrow_mut();
        if dev.store.partial(name).is_some() {
            return Err(StoreError::Exists);
        }
        dev.store.begin(name, size).map(NewFile)
    }

    /// Write bytes of `f` at `offset`.
    pub fn write_file(&self, f: &NewFile, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        self.dev.borrow_mut().store.write(f.0, offset, data)
    }

    /// Make `f` the file of its name (replacing an older one), dated now.
    pub fn commit_file(&self, f: NewFile, now_ms: u64) -> Result<(), StoreError> {
        let mut dev = self.dev.borrow_mut();
        let secs = dev.clock.unix_ms(now_ms).map_or(0, |ms| ms / 1000);
        dev.store.commit(f.0, secs, true)
    }

    /// Drop `f`.
    pub fn discard_file(&self, f: NewFile) {
        self.dev.borrow_mut().store.discard(f.0);
    }
}

/// One connection's protocol state, over caller-owned buffers.
pub struct Conn(DeviceConn<&'static mut [u8]>);

impl Conn {
    /// Buffers: a frame header, queued replies, command output.
    pub fn new(header: &'static mut [u8], tx: &'static mut [u8], out: &'static mut [u8]) -> Self {
        Conn(DeviceConn::new(header, tx, out))
    }

    /// RAM of a session's state (without its buffers).
    pub const STATE_BYTES: usize = core::mem::size_of::<DeviceConn<&'static mut [u8]>>();

    /// A connection was accepted from `ipv4` (`None`: a serial line) with a fresh `nonce`.
    pub fn open(&mut self, sh: &Shared, ipv4: Option<[u8; 4]>, nonce: [u8; 16], now_ms: u64) {
        let peer = ipv4.map_or(Peer::UNKNOWN, Peer::ipv4);
        self.0
            .handle_accept(&mut sh.dev.borrow_mut(), peer, nonce, now_ms);
        sh.open.set(sh.open.get() + 1);
    }

    /// Received bytes; returns how many were taken (the rest waits for room to reply).
    pub fn feed(&mut self, sh: &Shared, bytes: &[u8], now_ms: u64) -> usize {
        self.0.handle_bytes(&mut sh.dev.borrow_mut(), bytes, now_ms)
    }

    /// Bytes to send, written into `out`; returns how many.
    pub fn emit(&mut self, sh: &Shared, out: &mut [u8], now_ms: u64) -> usize {
        self.0.poll_transmit(&mut sh.dev.borrow_mut(), out, now_ms)
    }

    /// Whether [`Conn::emit`] has (or may make) bytes.
    pub fn wants_transmit(&self) -> bool {
        self.0.wants_transmit()
    }

    /// When [`Conn::tick`] is next due (monotonic ms).
    pub fn deadline(&self) -> Option<u64> {
        self.0.poll_timeout()
    }

    /// Enforce deadlines at `now_ms`.
    pub fn tick(&mut self, sh: &Shared, now_ms: u64) {
        self.0.handle_timeout(&mut sh.dev.borrow_mut(), now_ms)
    }

    /// Whether the connection should be closed now.
    pub fn should_close(&self) -> bool {
        self.0.poll_close()
    }

    /// The connection ended.
    pub fn close(&mut self, sh: &Shared) {
        if self.0.is_open() {
            sh.open.set(sh.open.get().saturating_sub(1));
        }
        self.0.handle_close(&mut sh.dev.borrow_mut());
    }
}

fn sha256_cmd(_: &mut (), ctx: &mut Ctx<'_>, args: &[&str], out: &mut Output<'_>) -> i32 {
    let [_, name] = args else {
        let _ = writeln!(out.err(), "usage: sha256 NAME");
        return 2;
    };
    let Some(id) = ctx.store.find(name) else {
        let _ = writeln!(out.err(), "sha256: no such file: {name}");
        return 1;
    };
    let (mut h, mut buf, mut at) = (Sha256::new(), [0u8; 256], 0u64);
    loop {
        match ctx.store.read(id, at, &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                at += n as u64;
            }
            Err(e) => {
                let _ = writeln!(out.err(), "sha256: {e}");
                return 1;
            }
        }
    }
    for b in h.finalize() {
        let _ = write!(out, "{b:02x}");
    }
    let _ = writeln!(out, "  {name}");
    0
}

/// `push` and `fetch`: the job starts in the client task; `jobs` says how
/// it ended.
fn job_cmd(_: &mut (), ctx: &mut Ctx<'_>, args: &[&str], out: &mut Output<'_>) -> i32 {
    let job = match board::job::parse(args, tether_proto::DEFAULT_PORT) {
        Ok(j) => j,
        Err(why) => {
            let _ = writeln!(out.err(), "{why}");
            return 2;
        }
    };
    if job.kind == board::job::Kind::Push && ctx.store.find(&job.local).is_none() {
        let _ = writeln!(out.err(), "push: no such file: {}", job.local);
        return 1;
    }
    match crate::client::submit(&job) {
        Ok(seq) => {
            let _ = writeln!(out, "job {seq}: {job}: started (`jobs` shows how it ends)");
            0
        }
        Err(why) => {
            let _ = writeln!(out.err(), "{}: {why}", args[0]);
            1
        }
    }
}

fn jobs_cmd(_: &mut (), _: &mut Ctx<'_>, _: &[&str], out: &mut Output<'_>) -> i32 {
    crate::client::status(out);
    0
}

/// The firmware's own commands, beside the built-in ones.
static COMMANDS: [Cmd<()>; 4] = [
    Cmd {
        name: "sha256",
        usage: "sha256 NAME           SHA-256 of a stored file, computed on the device",
        run: sha256_cmd,
    },
    Cmd {
        name: "push",
        usage: "push HOST[:PORT] NAME [REMOTE]   put a stored file to a tether server (the device's key)",
        run: job_cmd,
    },
    Cmd {
        name: "fetch",
        usage: "fetch HOST[:PORT] NAME [LOCAL]   get a tether server's file into the store",
        run: job_cmd,
    },
    Cmd {
        name: "jobs",
        usage: "jobs                  how the last push or fetch is going or ended",
        run: jobs_cmd,
    },
];

//! The simulated device as a tether client, as a firmware would be one:
//! `push HOST[:PORT] NAME [REMOTE]` puts a stored file to a `tether
//! serve`, `fetch HOST[:PORT] NAME [LOCAL]` gets one into the store, and
//! `jobs` says how the last one ended.
//!
//! A command runs to completion inside a session call, so it only checks
//! its arguments and queues the job ([`Jobs`]); the main loop takes it
//! ([`SimDevice::take_job`]) and runs it with the core's **blocking**
//! driver (`tether_proto::client::blocking`) over [`SimTcp`]: the device's
//! own smoltcp TCP socket (allocated at boot) as an `embedded_io` stream.
//! While the stream waits, it polls the whole device, so the device keeps
//! serving its sessions (`tether exec ... jobs` answers during a push).
//! The device's key is the client's: the server must hold the same one.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::phy;
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpEndpoint};
use tether_proto::client::blocking::Client;
use tether_proto::client::{ClientBuffers, ClientConfig, Error, PutOptions, Transfer};
use tether_proto::device::commands::{Ctx, Output};
use tether_proto::device::{FileId, Store as _};
use tether_proto::handshake::KEY_LEN;

use crate::SimDevice;

/// Which way a file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Store to server.
    Push,
    /// Server to store.
    Fetch,
}

/// One job, as the command gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Which way.
    pub kind: Kind,
    /// The server.
    pub server: SocketAddrV4,
    /// The file's name in the store.
    pub local: String,
    /// Its name on the server.
    pub remote: String,
}

impl std::fmt::Display for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (verb, from, dir, to) = match self.kind {
            Kind::Push => ("push", &self.local, "to", &self.remote),
            Kind::Fetch => ("fetch", &self.remote, "from", &self.local),
        };
        write!(f, "{verb} {from} {dir} {}", self.server)?;
        if from != to {
            write!(f, " as {to}")?;
        }
        Ok(())
    }
}

/// `push|fetch HOST[:PORT] NAME [AS]`.
pub fn parse(args: &[&str]) -> Result<Job, &'static str> {
    let (kind, usage) = match args.first() {
        Some(&"push") => (Kind::Push, "usage: push HOST[:PORT] NAME [REMOTE]"),
        Some(&"fetch") => (Kind::Fetch, "usage: fetch HOST[:PORT] NAME [LOCAL]"),
        _ => return Err("usage: push|fetch HOST[:PORT] NAME [AS]"),
    };
    let (host, name, other) = match args[1..] {
        [h, n] => (h, n, n),
        [h, n, o] => (h, n, o),
        _ => return Err(usage),
    };
    let server = match host.parse::<SocketAddrV4>() {
        Ok(a) if a.port() > 0 => a,
        Ok(_) => return Err("PORT must not be 0"),
        Err(_) => match host.parse::<Ipv4Addr>() {
            Ok(ip) => SocketAddrV4::new(ip, tether_proto::DEFAULT_PORT),
            Err(_) => return Err("HOST must be an IPv4 address, with :PORT if not the default"),
        },
    };
    if server.ip().is_unspecified() {
        return Err("HOST must be an IPv4 address, with :PORT if not the default");
    }
    let (name, other) = (name.to_string(), other.to_string());
    let (local, remote) = match kind {
        Kind::Push => (name, other),
        Kind::Fetch => (other, name),
    };
    Ok(Job {
        kind,
        server,
        local,
        remote,
    })
}

/// The commands' state: the job queued, and how the last one went.
#[derive(Debug, Default)]
pub struct Jobs {
    queued: Option<(u32, Job)>,
    seq: u32,
    busy: bool,
    line: String,
}

impl Jobs {
    /// No job yet.
    pub const fn new() -> Self {
        Jobs {
            queued: None,
            seq: 0,
            busy: false,
            line: String::new(),
        }
    }

    /// How the last job is going or ended (empty before the first).
    pub fn status(&self) -> &str {
        &self.line
    }
}

pub(crate) fn job_cmd(
    jobs: &mut Jobs,
    ctx: &mut Ctx<'_>,
    args: &[&str],
    out: &mut Output<'_>,
) -> i32 {
    let job = match parse(args) {
        Ok(j) => j,
        Err(why) => {
            let _ = writeln!(out.err(), "{why}");
            return 2;
        }
    };
    if job.kind == Kind::Push && ctx.store.find(&job.local).is_none() {
        let _ = writeln!(out.err(), "push: no such file: {}", job.local);
        return 1;
    }
    if jobs.busy {
        let _ = writeln!(out.err(), "{}: a job is running (see `jobs`)", args[0]);
        return 1;
    }
    jobs.seq += 1;
    jobs.busy = true;
    jobs.line = format!("job {}: {job}: running", jobs.seq);
    let _ = writeln!(
        out,
        "job {}: {job}: started (`jobs` shows how it ends)",
        jobs.seq
    );
    jobs.queued = Some((jobs.seq, job));
    0
}

pub(crate) fn jobs_cmd(jobs: &mut Jobs, _: &mut Ctx<'_>, _: &[&str], out: &mut Output<'_>) -> i32 {
    if jobs.seq == 0 {
        let _ = writeln!(out, "no job yet");
    } else {
        let _ = writeln!(out, "{}", jobs.line);
    }
    0
}

/// What the client offers: 512-byte headers, 2 KiB chunks.
const CONFIG: ClientConfig = ClientConfig {
    agent: concat!("tether-sim-client/", env!("CARGO_PKG_VERSION")),
    max_header: 512,
    max_chunk: 2048,
    key: Some([0; KEY_LEN]),
    ..ClientConfig::DEFAULT
};

/// The client's buffers (sized for a key).
pub const ARENA: usize = ClientBuffers::arena_len(&CONFIG, 1024);

/// How long the stream waits for the server before it gives up.
const PATIENCE: Duration = Duration::from_secs(20);

impl SimDevice {
    /// The job a `push` or `fetch` queued, if any: run it with
    /// [`run_job`], then give the result to [`SimDevice::finish_job`].
    pub fn take_job(&mut self) -> Option<(u32, Job)> {
        self.dev.commands.state.queued.take()
    }

    /// Record how job `seq` ended (what `jobs` prints).
    pub fn finish_job(
        &mut self,
        seq: u32,
        job: &Job,
        r: &Result<(Transfer, bool), String>,
        ms: u64,
    ) {
        let mut line = format!("job {seq}: {job}: ");
        match r {
            Ok((t, sealed)) => {
                let _ = write!(
                    line,
                    "done: {} B in {ms} ms, sha256 {}, {}",
                    t.size,
                    hex::encode(t.sha256),
                    if *sealed { "sealed" } else { "open" }
                );
            }
            Err(why) => {
                let _ = write!(line, "failed: {why}");
            }
        }
        self.log(format_args!("{line}"));
        let jobs = &mut self.dev.commands.state;
        jobs.line = line;
        jobs.busy = false;
    }
}

/// The device and its network, shared by the stream and the store's
/// reader or writer for the length of a job.
struct Shared<'a, D: ?Sized> {
    sim: RefCell<&'a mut SimDevice>,
    phy: RefCell<&'a mut D>,
}

/// The device's client socket as a blocking `embedded_io` stream: when it
/// cannot move, it polls the whole device and waits (`wait` gets the
/// longest wait; it returns false to give up, on a signal say).
pub(crate) struct SimTcp<'s, 'a, D: ?Sized, N, W> {
    sh: &'s Shared<'a, D>,
    now: N,
    wait: W,
}

impl<D: phy::Device + ?Sized, N: Fn() -> Instant, W: FnMut(Duration) -> bool>
    SimTcp<'_, '_, D, N, W>
{
    /// Poll the device; then `f` on the client socket, until it returns
    /// `Some`, for at most [`PATIENCE`] without progress.
    fn until<T>(
        &mut self,
        mut f: impl FnMut(&mut tcp::Socket<'static>) -> Option<Result<T, embedded_io::ErrorKind>>,
    ) -> Result<T, embedded_io::ErrorKind> {
        let start = (self.now)();
        loop {
            let t = (self.now)();
            let delay = {
                let mut sim = self.sh.sim.borrow_mut();
                let mut phy = self.sh.phy.borrow_mut();
                sim.poll(t, &mut **phy);
                let h = sim.client;
                let r = f(sim.sockets.get_mut::<tcp::Socket<'static>>(h));
                if let Some(r) = r {
                    // Send what was queued, or the window update, now.
                    sim.poll(t, &mut **phy);
                    return r;
                }
                sim.poll_delay(t)
            };
            if t - start > PATIENCE {
                return Err(embedded_io::ErrorKind::TimedOut);
            }
            let d = delay.map_or(Duration::from_millis(50), |d| {
                d.min(Duration::from_millis(50))
            });
            if !(self.wait)(d) {
                return Err(embedded_io::ErrorKind::Interrupted);
            }
        }
    }
}

impl<D: ?Sized, N, W> embedded_io::ErrorType for SimTcp<'_, '_, D, N, W> {
    type Error = embedded_io::ErrorKind;
}

impl<D: phy::Device + ?Sized, N: Fn() -> Instant, W: FnMut(Duration) -> bool> embedded_io::Read
    for SimTcp<'_, '_, D, N, W>
{
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.until(|s| {
            if s.can_recv() {
                return Some(s.recv_slice(buf).map_err(|_| embedded_io::ErrorKind::Other));
            }
            match s.state() {
                // The server closed its side: the end of the stream.
                _ if !s.may_recv() && s.state() != tcp::State::Closed => Some(Ok(0)),
                tcp::State::Closed => Some(Err(embedded_io::ErrorKind::ConnectionReset)),
                _ => None,
            }
        })
    }
}

impl<D: phy::Device + ?Sized, N: Fn() -> Instant, W: FnMut(Duration) -> bool> embedded_io::Write
    for SimTcp<'_, '_, D, N, W>
{
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.until(|s| {
            if !s.may_send() {
                return Some(Err(embedded_io::ErrorKind::ConnectionReset));
            }
            s.can_send()
                .then(|| s.send_slice(buf).map_err(|_| embedded_io::ErrorKind::Other))
        })
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Run `job` on the device's client socket: connect, hand-shake with the
/// device's key, transfer, close. `now` is the device's clock; `wait` waits
/// for the network at most the given time (false: give up). Returns the
/// transfer and whether the session was sealed, or what went wrong.
pub fn run_job<D: phy::Device + ?Sized>(
    sim: &mut SimDevice,
    phy: &mut D,
    job: &Job,
    now: impl Fn() -> Instant,
    wait: impl FnMut(Duration) -> bool,
) -> Result<(Transfer, bool), String> {
    let key = sim.config.key.map(|k| k.0);
    let mut arena = std::mem::take(&mut sim.client_mem);
    let port = 49152 + (sim.client_port % 16384);
    sim.client_port = sim.client_port.wrapping_add(1);
    let sh = Shared {
        sim: RefCell::new(sim),
        phy: RefCell::new(phy),
    };
    let mut io = SimTcp {
        sh: &sh,
        now: &now,
        wait,
    };
    let r = connect(&mut io, job.server, port)
        .and_then(|()| transfer(&mut io, &sh, key, job, &mut arena, &now));
    // Close (the server reads the end), then free the socket for the next job.
    let _ = io.until(|s| {
        s.close();
        // Closed, or our FIN acknowledged: the server has everything.
        use tcp::State as S;
        matches!(
            s.state(),
            S::FinWait2 | S::TimeWait | S::Closing | S::Closed
        )
        .then_some(Ok(()))
    });
    let sim = sh.sim.into_inner();
    let h = sim.client;
    sim.sockets.get_mut::<tcp::Socket<'static>>(h).abort();
    sim.client_mem = arena;
    r
}

fn connect<D: phy::Device + ?Sized, N: Fn() -> Instant, W: FnMut(Duration) -> bool>(
    io: &mut SimTcp<'_, '_, D, N, W>,
    server: SocketAddrV4,
    port: u16,
) -> Result<(), String> {
    {
        let mut sim = io.sh.sim.borrow_mut();
        let sim = &mut **sim;
        let s = sim.sockets.get_mut::<tcp::Socket<'static>>(sim.client);
        s.abort();
        let remote = IpEndpoint::new(IpAddress::Ipv4(*server.ip()), server.port());
        s.connect(sim.iface.context(), remote, port)
            .map_err(|e| format!("cannot connect: {e}"))?;
    }
    io.until(|s| match s.state() {
        tcp::State::Established => Some(Ok(())),
        tcp::State::Closed => Some(Err(embedded_io::ErrorKind::ConnectionRefused)),
        _ => None,
    })
    .map_err(|e| format!("cannot connect to {server}: {e:?}"))
}

fn transfer<D: phy::Device + ?Sized, N: Fn() -> Instant, W: FnMut(Duration) -> bool>(
    io: &mut SimTcp<'_, '_, D, N, W>,
    sh: &Shared<'_, D>,
    key: Option<[u8; KEY_LEN]>,
    job: &Job,
    arena: &mut [u8],
    now: &impl Fn() -> Instant,
) -> Result<(Transfer, bool), String> {
    let cfg = ClientConfig { key, ..CONFIG };
    let bufs = ClientBuffers::split(arena, &cfg).ok_or("client buffers too small")?;
    let clock = || now().total_millis() as u64;
    let mut c = Client::new(io, cfg, bufs, clock).map_err(|e| e.to_string())?;
    let why = |c: &Client<'_, _, _>, e: Error<embedded_io::ErrorKind>| match c.message() {
        m if m.is_empty() || matches!(e, Error::Handshake(_)) => e.to_string(),
        m => format!("{e}: {m}"),
    };
    let nonce: [u8; 16] = rand::random();
    if let Err(e) = c.handshake(nonce) {
        return Err(why(&c, e));
    }
    let sealed = c.session().is_some_and(|s| s.authenticated);
    let t = match job.kind {
        Kind::Push => {
            let (id, size, generation) = {
                let sim = sh.sim.borrow();
                let id = sim
                    .dev
                    .store
                    .find(&job.local)
                    .ok_or_else(|| format!("no such file: {}", job.local))?;
                let m = sim.dev.store.meta(id).ok_or("no such file")?;
                (id, m.size, m.generation)
            };
            let src = StoreReader {
                sh,
                id,
                generation,
                pos: 0,
            };
            let opts = PutOptions {
                force: true,
                resume: false,
            };
            c.put(&job.remote, size, src, opts)
                .map_err(|e| why(&c, e))?
        }
        Kind::Fetch => {
            let size = c.stat(&job.remote).map_err(|e| why(&c, e))?.size;
            let tmp = {
                let mut sim = sh.sim.borrow_mut();
                if sim.dev.store.partial(&job.local).is_some() {
                    return Err(format!(
                        "{}: an upload to it is in progress or kept for resuming",
                        job.local
                    ));
                }
                sim.dev
                    .store
                    .begin(&job.local, size)
                    .map_err(|e| format!("{}: {e}", job.local))?
            };
            let mut w = StoreWriter { sh, tmp, pos: 0 };
            let r = c.get(&job.remote, None, &mut w);
            let mut sim = sh.sim.borrow_mut();
            match r {
                Ok(t) if t.size == size => {
                    let secs = sim.dev.clock.offset_ms / 1000 + now().total_millis() as u64 / 1000;
                    sim.dev
                        .store
                        .commit(tmp, secs, true)
                        .map_err(|e| format!("{}: {e}", job.local))?;
                    t
                }
                Ok(t) => {
                    sim.dev.store.discard(tmp);
                    return Err(format!(
                        "the file changed while fetched: {} B, not {size}",
                        t.size
                    ));
                }
                Err(e) => {
                    sim.dev.store.discard(tmp);
                    drop(sim);
                    return Err(why(&c, e));
                }
            }
        }
    };
    Ok((t, sealed))
}

/// A stored file as an `embedded_io::Read`; fails if the file is replaced
/// or removed meanwhile.
struct StoreReader<'s, 'a, D: ?Sized> {
    sh: &'s Shared<'a, D>,
    id: FileId,
    generation: u32,
    pos: u64,
}

impl<D: ?Sized> embedded_io::ErrorType for StoreReader<'_, '_, D> {
    type Error = embedded_io::ErrorKind;
}

impl<D: ?Sized> embedded_io::Read for StoreReader<'_, '_, D> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let sim = self.sh.sim.borrow();
        let store = &sim.dev.store;
        if store
            .meta(self.id)
            .is_none_or(|m| m.generation != self.generation)
        {
            return Err(embedded_io::ErrorKind::InvalidData);
        }
        let n = store
            .read(self.id, self.pos, buf)
            .map_err(|_| embedded_io::ErrorKind::Other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A reserved file as an `embedded_io::Write`, in order.
struct StoreWriter<'s, 'a, D: ?Sized> {
    sh: &'s Shared<'a, D>,
    tmp: FileId,
    pos: u64,
}

impl<D: ?Sized> embedded_io::ErrorType for StoreWriter<'_, '_, D> {
    type Error = embedded_io::ErrorKind;
}

impl<D: ?Sized> embedded_io::Write for StoreWriter<'_, '_, D> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.sh
            .sim
            .borrow_mut()
            .dev
            .store
            .write(self.tmp, self.pos, buf)
            .map_err(|_| embedded_io::ErrorKind::OutOfMemory)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_parse() {
        let j = parse(&["push", "192.168.69.100", "up.bin"]).unwrap();
        assert_eq!(j.to_string(), "push up.bin to 192.168.69.100:7117");
        let j = parse(&["fetch", "10.0.0.1:9000", "a", "b"]).unwrap();
        assert_eq!((j.local.as_str(), j.remote.as_str()), ("b", "a"));
        assert_eq!(j.to_string(), "fetch a from 10.0.0.1:9000 as b");
        for bad in [
            &["push"][..],
            &["push", "1.2.3.4"],
            &["push", "host", "a"],
            &["push", "1.2.3.4:0", "a"],
            &["push", "0.0.0.0", "a"],
            &["fetch", "1.2.3.4", "a", "b", "c"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}

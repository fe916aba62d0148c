//! Commands a device runs for `Exec`: the built-ins and the firmware's own.
//!
//! A device has no shell and no processes: a command is a function that
//! gets its arguments (program name first), a [`Ctx`] with the device's
//! state, and an [`Output`] to write to, and returns an exit code. It runs to
//! completion inside one [`Session`](super::Session) call, so it should be
//! quick; its output is kept in the session's output buffer (stdout gets
//! the first three quarters, stderr the rest; what does not fit is cut and
//! a note is added to stderr) and then sent as `Output` frames.
//!
//! # Adding your own commands
//! Put them in a [`Table`]: a slice of [`Cmd`] entries (name, usage line,
//! handler) plus whatever state `T` the handlers need (pins, sensors). The
//! built-ins are looked up first, then the table; `help` lists both.
//!
//! ```
//! use core::fmt::Write;
//! use tether_proto::device::commands::{Cmd, Ctx, Output, Table};
//!
//! struct Sensor { millidegrees: i32 }
//!
//! fn temp(s: &mut Sensor, _ctx: &mut Ctx<'_>, args: &[&str], out: &mut Output<'_>) -> i32 {
//!     if args.len() > 1 {
//!         let _ = writeln!(out.err(), "usage: temp");
//!         return 2;
//!     }
//!     let _ = writeln!(out, "{}.{:03} C", s.millidegrees / 1000, s.millidegrees % 1000);
//!     0
//! }
//!
//! static MINE: [Cmd<Sensor>; 1] = [Cmd { name: "temp", usage: "temp  read the sensor", run: temp }];
//! let table = Table { state: Sensor { millidegrees: 21_500 }, commands: &MINE };
//! // Device::new(config, store, clock, table) then serves `tether exec HOST -- temp`.
//! # let _ = table;
//! ```

use core::fmt::{self, Write};

use super::store::Store;
use super::{MemReport, Stats};

/// Most arguments (program included) a command line may have.
pub const MAX_ARGS: usize = 16;

/// Where a command writes its output: a caller-owned buffer split between
/// stdout (the first three quarters) and stderr (the rest). Writing past a
/// region's end drops the excess and marks the output truncated.
///
/// `write!(out, ..)` goes to stdout, `write!(out.err(), ..)` to stderr.
#[derive(Debug)]
pub struct Output<'a> {
    buf: &'a mut [u8],
    split: usize,
    out: usize,
    err: usize,
    truncated: bool,
}

/// The stderr half of an [`Output`].
#[derive(Debug)]
pub struct Stderr<'o, 'a>(&'o mut Output<'a>);

impl<'a> Output<'a> {
    /// Output into `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        let split = buf.len() - buf.len() / 4;
        Output {
            buf,
            split,
            out: 0,
            err: 0,
            truncated: false,
        }
    }

    /// Append to stdout (or, with `stderr`, to stderr).
    pub fn write(&mut self, stderr: bool, bytes: &[u8]) {
        let (base, len, cap) = if stderr {
            (self.split, &mut self.err, self.buf.len() - self.split)
        } else {
            (0, &mut self.out, self.split)
        };
        let n = bytes.len().min(cap - *len);
        self.buf[base + *len..base + *len + n].copy_from_slice(&bytes[..n]);
        *len += n;
        if n < bytes.len() {
            self.truncated = true;
        }
    }

    /// The stderr writer.
    pub fn err(&mut self) -> Stderr<'_, 'a> {
        Stderr(self)
    }

    /// Bytes written to stdout so far.
    pub fn stdout(&self) -> &[u8] {
        &self.buf[..self.out]
    }

    /// Bytes written to stderr so far.
    pub fn stderr(&self) -> &[u8] {
        &self.buf[self.split..self.split + self.err]
    }

    /// Whether some output did not fit.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// End stderr with a note that output was cut (overwriting its tail if full).
    pub(crate) fn note_truncated(&mut self) {
        const NOTE: &[u8] = b"\n[output truncated]\n";
        let cap = self.buf.len() - self.split;
        let n = NOTE.len().min(cap);
        self.err = self.err.min(cap - n);
        let at = self.split + self.err;
        self.buf[at..at + n].copy_from_slice(&NOTE[NOTE.len() - n..]);
        self.err += n;
    }

    /// (stdout range, stderr range) within the buffer.
    pub(crate) fn ranges(&self) -> (core::ops::Range<usize>, core::ops::Range<usize>) {
        (0..self.out, self.split..self.split + self.err)
    }
}

impl Write for Output<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write(false, s.as_bytes());
        Ok(())
    }
}

impl Write for Stderr<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write(true, s.as_bytes());
        Ok(())
    }
}

/// What a command can see and do.
pub struct Ctx<'a> {
    /// The caller's monotonic time, in milliseconds.
    pub now_ms: u64,
    /// Milliseconds since the device booted.
    pub uptime_ms: u64,
    /// Wall-clock time, if the device knows it.
    pub unix_ms: Option<u64>,
    /// Traffic counters.
    pub stats: Stats,
    /// The file store.
    pub store: &'a mut dyn Store,
    /// Uploads in progress on any connection (the store's other temporary
    /// slots are interrupted uploads kept for resuming).
    pub uploads: usize,
    /// RAM use of the connection running the command, and the firmware's own lines.
    pub mem: MemReport<'a>,
    pub(crate) led: &'a mut bool,
    pub(crate) led_changed: &'a mut bool,
    pub(crate) reboot: &'a mut bool,
}

impl fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("now_ms", &self.now_ms)
            .field("uptime_ms", &self.uptime_ms)
            .field("led", &*self.led)
            .finish_non_exhaustive()
    }
}

impl Ctx<'_> {
    /// The simulated user LED's state.
    pub fn led(&self) -> bool {
        *self.led
    }
    /// Switch the user LED; the firmware sees [`Event::Led`](super::Event::Led).
    pub fn set_led(&mut self, on: bool) {
        *self.led = on;
        *self.led_changed = true;
    }
    /// Ask for a reboot once the reply is out: [`Event::Reboot`](super::Event::Reboot).
    pub fn request_reboot(&mut self) {
        *self.reboot = true;
    }
}

/// A command handler: state, context, arguments (program first), output;
/// returns the exit code.
pub type Handler<T> = fn(&mut T, &mut Ctx<'_>, &[&str], &mut Output<'_>) -> i32;

/// One command of a [`Table`].
pub struct Cmd<T> {
    /// What the user types.
    pub name: &'static str,
    /// One line for `help`: synopsis and what it does.
    pub usage: &'static str,
    /// The handler.
    pub run: Handler<T>,
}

impl<T> fmt::Debug for Cmd<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cmd").field("name", &self.name).finish()
    }
}

/// The firmware's command table.
pub trait Commands {
    /// Run `args` if `args[0]` is one of yours; `None` if it is not.
    fn run(&mut self, ctx: &mut Ctx<'_>, args: &[&str], out: &mut Output<'_>) -> Option<i32>;
    /// Write one `help` line per command.
    fn help(&self, out: &mut Output<'_>);
}

/// No commands beyond the built-ins.
impl Commands for () {
    fn run(&mut self, _: &mut Ctx<'_>, _: &[&str], _: &mut Output<'_>) -> Option<i32> {
        None
    }
    fn help(&self, _: &mut Output<'_>) {}
}

/// A command table: handlers sharing a state `T`.
#[derive(Debug)]
pub struct Table<'c, T: 'static> {
    /// What the handlers get as their first argument.
    pub state: T,
    /// The commands.
    pub commands: &'c [Cmd<T>],
}

impl<T> Commands for Table<'_, T> {
    fn run(&mut self, ctx: &mut Ctx<'_>, args: &[&str], out: &mut Output<'_>) -> Option<i32> {
        let name = *args.first()?;
        let cmd = self.commands.iter().find(|c| c.name == name)?;
        Some((cmd.run)(&mut self.state, ctx, args, out))
    }
    fn help(&self, out: &mut Output<'_>) {
        for c in self.commands {
            let _ = writeln!(out, "  {}", c.usage);
        }
    }
}

fn help(_: &mut (), _: &mut Ctx<'_>, _: &[&str], out: &mut Output<'_>) -> i32 {
    let _ = writeln!(out, "built-in commands:");
    for c in &BUILTINS {
        let _ = writeln!(out, "  {}", c.usage);
    }
    0
}

fn echo(_: &mut (), _: &mut Ctx<'_>, args: &[&str], out: &mut Output<'_>) -> i32 {
    for (i, a) in args.iter().skip(1).enumerate() {
        if i > 0 {
            out.write(false, b" ");
        }
        out.write(false, a.as_bytes());
    }
    out.write(false, b"\n");
    0
}

fn uptime(_: &mut (), ctx: &mut Ctx<'_>, _: &[&str], out: &mut Output<'_>) -> i32 {
    let ms = ctx.uptime_ms;
    let s = ms / 1000;
    let _ = write!(
        out,
        "up {}d {:02}:{:02}:{:02}.{:03} ({ms} ms)",
        s / 86_400,
        s / 3600 % 24,
        s / 60 % 60,
        s % 60,
        ms % 1000
    );
    if let Some(unix) = ctx.unix_ms {
        let mut b = [0u8; 24];
        if let Ok(t) = crate::time::format_time(unix, "", &mut b) {
            let _ = write!(out, ", now {t}");
        }
    }
    let _ = writeln!(out);
    0
}

fn mem(_: &mut (), ctx: &mut Ctx<'_>, _: &[&str], out: &mut Output<'_>) -> i32 {
    let m = ctx.mem;
    let s = m.conn;
    let _ = writeln!(
        out,
        "connection: {} B = header buffer {} + staging buffer {} ({} queued) + output buffer {} + state {}",
        s.total(),
        s.header_buf,
        s.staging_buf,
        s.queued,
        s.output_buf,
        s.state
    );
    for (what, bytes) in m.extra {
        let _ = writeln!(out, "{what}: {bytes} B");
    }
    let u = ctx.store.usage();
    let kept = (u.pending as usize).saturating_sub(ctx.uploads);
    let _ = writeln!(
        out,
        "store: {} of {} B used, {} of {} files, {} upload(s) in progress, {kept} kept for resuming",
        u.used, u.capacity, u.files, u.max_files, ctx.uploads
    );
    0
}

fn stats(_: &mut (), ctx: &mut Ctx<'_>, _: &[&str], out: &mut Output<'_>) -> i32 {
    let s = ctx.stats;
    let _ = writeln!(
        out,
        "frames: {} in, {} out\nbytes: {} in, {} out\nerrors: {} sent, {} bad frames received\nconnections: {}\ndatagrams: {}\nfiles: {} stored, {} sent\nsecurity: {} failed auth, {} refused (back-off), {} integrity failures, {} timeouts",
        s.frames_in,
        s.frames_out,
        s.bytes_in,
        s.bytes_out,
        s.errors_sent,
        s.bad_frames,
        s.connections,
        s.datagrams,
        s.files_stored,
        s.files_sent,
        s.auth_failures,
        s.backoff_refusals,
        s.integrity_failures,
        s.timeouts
    );
    0
}

fn led(_: &mut (), ctx: &mut Ctx<'_>, args: &[&str], out: &mut Output<'_>) -> i32 {
    match args.get(1..) {
        Some([]) | None => {}
        Some(["on"]) => ctx.set_led(true),
        Some(["off"]) => ctx.set_led(false),
        Some(["toggle"]) => {
            let on = !ctx.led();
            ctx.set_led(on);
        }
        Some(_) => {
            let _ = writeln!(out.err(), "usage: led [on|off|toggle]");
            return 2;
        }
    }
    let _ = writeln!(out, "led {}", if ctx.led() { "on" } else { "off" });
    0
}

fn reboot(_: &mut (), ctx: &mut Ctx<'_>, args: &[&str], out: &mut Output<'_>) -> i32 {
    if args.len() > 1 {
        let _ = writeln!(out.err(), "usage: reboot");
        return 2;
    }
    ctx.request_reboot();
    let _ = writeln!(out, "rebooting");
    0
}

/// The built-in commands, looked up before the firmware's table.
pub static BUILTINS: [Cmd<()>; 7] = [
    Cmd {
        name: "help",
        usage: "help                  list the commands",
        run: help,
    },
    Cmd {
        name: "echo",
        usage: "echo [ARG...]         print the arguments",
        run: echo,
    },
    Cmd {
        name: "uptime",
        usage: "uptime                time since boot",
        run: uptime,
    },
    Cmd {
        name: "mem",
        usage: "mem                   buffer and store use",
        run: mem,
    },
    Cmd {
        name: "stats",
        usage: "stats                 frames, bytes and errors since boot",
        run: stats,
    },
    Cmd {
        name: "led",
        usage: "led [on|off|toggle]   show or switch the user LED",
        run: led,
    },
    Cmd {
        name: "reboot",
        usage: "reboot                reset the device (files survive)",
        run: reboot,
    },
];

/// Run `args` as a built-in or a firmware command; `None` if neither knows it.
pub(crate) fn run<K: Commands + ?Sized>(
    firmware: &mut K,
    ctx: &mut Ctx<'_>,
    args: &[&str],
    out: &mut Output<'_>,
) -> Option<i32> {
    let name = *args.first()?;
    if let Some(c) = BUILTINS.iter().find(|c| c.name == name) {
        let code = (c.run)(&mut (), ctx, args, out);
        if name == "help" {
            // Only list the heading when the firmware has commands.
            let mut probe = [0u8; 4];
            let mut p = Output::new(&mut probe);
            firmware.help(&mut p);
            if !p.stdout().is_empty() || p.truncated() {
                let _ = writeln!(out, "device commands:");
                firmware.help(out);
            }
        }
        return Some(code);
    }
    firmware.run(ctx, args, out)
}

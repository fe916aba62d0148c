//! The `tether` command: see `tether --help`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{ArgAction, Args, Parser, Subcommand};
use tether_host::addr::{parse_duration, parse_rate, HostSpec};
use tether_host::client::exec::{exec, exit_code, report_status, shell, Cmdline};
use tether_host::client::transfer::{get, part_path, put, Report, TransferOpts};
use tether_host::client::udp::{UdpClient, UdpOpts};
use tether_host::client::{connect, fs, ConnectOpts};
use tether_host::key;
use tether_host::server::{bind, check_exposure, serve, ServerConfig};
use tether_proto::Message;

const ABOUT: &str =
    "Run commands and move files over one framed protocol, on a PC or a microcontroller";

const LONG_ABOUT: &str = "\
Run commands and move files over one framed protocol, on a PC or a microcontroller.

One machine serves (`tether serve`), others connect with the client commands.
HOST is host[:port]; the default port is 7117 (TCP for commands and files, UDP
for echo, time and ping, on the same port).

Keys: `tether keygen FILE` writes a pre-shared key. A server started with it
(`--key-file FILE`, or TETHER_KEY_FILE=FILE, or TETHER_KEY=<64 hex>) serves only
clients holding the same key, and every frame is then sealed against tampering,
replay and reordering. Clients that also pass --encrypt (or TETHER_ENCRYPT=1)
get every frame encrypted as well (ChaCha20-Poly1305), and refuse a server that
does not offer it. Keys are never taken on the command line. Without a key a
server listens on loopback only unless --insecure is given.";

const EXAMPLES: &str = "\
Examples:
  tether keygen box.key                           make a key (copy it to clients securely)
  tether serve --key-file box.key --listen 0.0.0.0:7117 --root /srv/share
  TETHER_KEY_FILE=box.key tether ls box           a client with the key
  tether get box secret.db --key-file box.key --encrypt   encrypted as well as sealed
  tether serve --root /srv/share --allow-exec     serve a directory on loopback, allow commands
  tether exec box -- uname -a                     run a command (no shell)
  tether exec box --shell 'ls | wc -l'            run a shell line
  tether put box ./image.bin fw/image.bin         upload (resumes if interrupted)
  tether get box fw/image.bin                     download, verified by SHA-256
  tether ls box fw                                list a directory
  tether ping box -c 3                            round-trip times over UDP

Exit status: `exec` returns the remote command's code (124 timed out, 130
cancelled, 128+N killed by signal N, 255 when tether itself failed); the other
commands return 0 on success, 1 on error, 2 on a usage error.";

#[derive(Debug, Parser)]
#[command(name = "tether", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Less output: no progress bar, summaries or warnings (-qq: not even errors).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    quiet: u8,
    /// Retries: for TCP after a refused connection or a busy server (default 0);
    /// for UDP after a timeout (default 3).
    #[arg(long, global = true, value_name = "N", env = "TETHER_RETRIES")]
    retries: Option<u32>,
    /// Wait before the first TCP retry; doubles after each (at most 30s).
    #[arg(long, global = true, value_name = "DUR", default_value = "500ms", value_parser = parse_duration)]
    retry_delay: Duration,
    /// Limit for connecting and for the handshake.
    #[arg(long, global = true, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Pre-shared key file (from `tether keygen`); else $TETHER_KEY_FILE, else
    /// $TETHER_KEY (64 hex digits). The file must be readable by its owner only.
    #[arg(long, global = true, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// serve: allow serving without a key on a non-loopback address. Clients:
    /// with a key set, still connect to a server that does not authenticate.
    #[arg(long, global = true)]
    insecure: bool,
    /// TCP client commands: require encryption (needs a key); every frame is
    /// then encrypted with ChaCha20-Poly1305, and a server that does not offer
    /// it is refused. Without it frames are sealed, not encrypted. Not for
    /// serve (a keyed server offers it unless --no-encrypt) nor for the UDP
    /// commands (never encrypted).
    #[arg(long, global = true, env = "TETHER_ENCRYPT", value_parser = clap::builder::FalseyValueParser::new())]
    encrypt: bool,
    /// Refused: a key on the command line is visible to every local user.
    #[arg(long, global = true, hide = true, value_name = "KEY")]
    key: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve commands and files over TCP, and echo/time/ping over UDP, on one port.
    ///
    /// Prints `listening on ADDR:PORT` on stdout once ready (useful with port 0),
    /// then one log line per request on stderr. Ctrl-C or SIGTERM stops
    /// accepting, lets transfers in flight finish within --shutdown-grace and
    /// keeps interrupted uploads resumable; a second signal stops at once.
    Serve(ServeArgs),
    /// Write a new random pre-shared key (64 hex digits) to PATH, readable by
    /// you only (mode 0600; on Windows an ACL granting you alone).
    ///
    /// Give the file to the server (`tether serve --key-file PATH`) and to
    /// each client (`--key-file PATH` or TETHER_KEY_FILE=PATH), copying it
    /// over a secure channel. An existing file is kept unless --force.
    Keygen {
        /// Where to write the key.
        #[arg(default_value = "tether.key")]
        path: PathBuf,
        /// Replace an existing file (its old key stops working).
        #[arg(long)]
        force: bool,
    },
    /// Run a command on the server; its output streams here as it is produced.
    ///
    /// The command runs from its argv, without a shell, unless --shell is given.
    /// Ctrl-C cancels the remote command. The exit status is the remote one.
    #[command(
        after_help = "Examples:\n  tether exec box -- ls -l /tmp\n  tether exec box --timeout 30 -- make test\n  tether exec box --shell 'dmesg | tail'"
    )]
    Exec(ExecArgs),
    /// Interactive remote shell: each line runs on the server (`exit` leaves).
    ///
    /// Empty lines are ignored. When the server restarts, the next line
    /// reconnects (waiting for it to come back).
    Shell {
        /// Server: host[:port].
        #[arg(value_parser = HostSpec::parse)]
        host: HostSpec,
    },
    /// Download a file: verified by SHA-256, resumable, atomic.
    ///
    /// Prints `<sha256>  <LOCAL>` on stdout (the format of sha256sum, so
    /// `sha256sum -c` checks it) and a summary on stderr. The data lands in
    /// LOCAL.tether-part and is renamed to LOCAL only once verified; an
    /// interrupted download continues from that partial next time.
    #[command(
        after_help = "Examples:\n  tether get box logs/app.log\n  tether get box fw/image.bin /tmp/ --force"
    )]
    Get(GetArgs),
    /// Upload a file: verified by SHA-256, resumable, atomic.
    ///
    /// Prints `<sha256>  <LOCAL>` on stdout and a summary on stderr. The
    /// server keeps the data in .NAME.tether-part beside the destination and
    /// renames it only once verified; an interrupted upload continues from
    /// there next time.
    #[command(
        after_help = "Examples:\n  tether put box ./image.bin\n  tether put box ./image.bin fw/ --force"
    )]
    Put(PutArgs),
    /// List a directory on the server (default: its root).
    Ls {
        /// Server: host[:port].
        #[arg(value_parser = HostSpec::parse)]
        host: HostSpec,
        /// Directory, relative to the server's root.
        path: Option<String>,
    },
    /// Describe one path on the server.
    Stat {
        /// Server: host[:port].
        #[arg(value_parser = HostSpec::parse)]
        host: HostSpec,
        /// Path, relative to the server's root.
        path: String,
    },
    /// Remove a file or an empty directory on the server.
    Rm {
        /// Server: host[:port].
        #[arg(value_parser = HostSpec::parse)]
        host: HostSpec,
        /// Path, relative to the server's root.
        path: String,
    },
    /// Send text over UDP; the server answers it upper-cased.
    Echo {
        /// Server: host[:port].
        #[arg(value_parser = HostSpec::parse)]
        host: HostSpec,
        /// The text (it must fit in one datagram).
        text: String,
        #[command(flatten)]
        udp: UdpArgs,
    },
    /// Ask the server's time over UDP.
    Time {
        /// Server: host[:port].
        #[arg(value_parser = HostSpec::parse)]
        host: HostSpec,
        /// strftime-style format, in UTC (default %Y-%m-%dT%H:%M:%SZ).
        format: Option<String>,
        #[command(flatten)]
        udp: UdpArgs,
    },
    /// Measure round-trip times over UDP.
    Ping {
        /// Server: host[:port].
        #[arg(value_parser = HostSpec::parse)]
        host: HostSpec,
        /// Number of probes.
        #[arg(short, long, default_value_t = 4)]
        count: u32,
        /// Time between probes.
        #[arg(short, long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// How long to wait for each reply.
        #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address and port for TCP and UDP (port 0 picks a free one).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:7117")]
    listen: SocketAddr,
    /// Directory whose files are served; nothing outside it is reachable.
    #[arg(long, value_name = "DIR", default_value = ".")]
    root: PathBuf,
    /// Run commands for clients (they run in --root, as this user).
    #[arg(long)]
    allow_exec: bool,
    /// With --allow-exec: run only this program (repeatable). argv[0] must
    /// equal NAME exactly: a bare name is looked up in the server's PATH, a
    /// path allows only that path. Shell lines are then refused.
    #[arg(long = "allow-cmd", value_name = "NAME", requires = "allow_exec")]
    allow_cmd: Vec<String>,
    /// Refuse uploads and removals (downloads, listing and stat still work).
    #[arg(long)]
    read_only: bool,
    /// With a key: do not offer encryption (clients that require it with
    /// --encrypt are refused; the others are served sealed as always).
    #[arg(long)]
    no_encrypt: bool,
    /// Most downloads and uploads running at once; more are refused as busy.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_transfers: usize,
    /// Most connections at once; more are refused as busy.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_connections: usize,
    /// Time a new connection has to complete the handshake.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// Close connections idle this long; also the longest a client may stop reading.
    #[arg(long, value_name = "DUR", default_value = "300s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// After Ctrl-C/SIGTERM, how long transfers in flight may go on.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    shutdown_grace: Duration,
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// Server: host[:port].
    #[arg(value_parser = HostSpec::parse)]
    host: HostSpec,
    /// Kill the remote command after this long (exit status 124).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Run LINE with the server's shell (sh -c LINE; cmd /C LINE on a Windows
    /// server) instead of an argv.
    #[arg(long, value_name = "LINE", conflicts_with = "command")]
    shell: Option<String>,
    /// The program and its arguments (after `--`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct TransferArgs {
    /// Replace an existing destination.
    #[arg(long)]
    force: bool,
    /// Start over instead of continuing an interrupted transfer.
    #[arg(long)]
    no_resume: bool,
    /// Limit the rate, in bytes per second (e.g. 500K, 10M).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    limit_rate: Option<u64>,
}

#[derive(Debug, Args)]
struct GetArgs {
    /// Server: host[:port].
    #[arg(value_parser = HostSpec::parse)]
    host: HostSpec,
    /// File on the server, relative to its root.
    remote: String,
    /// Where to save it (default: the remote file's name, here; a directory: inside it).
    local: Option<PathBuf>,
    #[command(flatten)]
    t: TransferArgs,
}

#[derive(Debug, Args)]
struct PutArgs {
    /// Server: host[:port].
    #[arg(value_parser = HostSpec::parse)]
    host: HostSpec,
    /// Local file to upload.
    local: PathBuf,
    /// Destination on the server (default: the file's name in the root; ending in '/': inside that directory).
    remote: Option<String>,
    #[command(flatten)]
    t: TransferArgs,
}

#[derive(Debug, Args)]
struct UdpArgs {
    /// How long to wait for each reply.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    timeout: Duration,
}

fn init_logging(cli: &Cli) {
    let base: i32 = if matches!(cli.cmd, Cmd::Serve(_)) {
        2
    } else {
        1
    };
    let level = base + i32::from(cli.verbose) - i32::from(cli.quiet);
    let filter = match level {
        i32::MIN..=-1 => "off",
        0 => "error",
        1 => "warn",
        2 => "info",
        3 => "debug",
        _ => "trace",
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_string());
    let env = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && tether_host::platform::ansi_stderr(),
        )
        .with_target(false);
    if matches!(cli.cmd, Cmd::Serve(_)) {
        b.init();
    } else {
        b.without_time().init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.key.is_some() {
        use clap::CommandFactory as _;
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "keys are never taken on the command line (every local user can read it in the process list): put the key in a file (`tether keygen PATH`) and pass --key-file PATH or set TETHER_KEY_FILE=PATH",
            )
            .exit();
    }
    if let Cmd::Exec(a) = &cli.cmd {
        if a.shell.is_none() && a.command.is_empty() {
            use clap::CommandFactory as _;
            Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "no command given: write `tether exec HOST -- CMD [ARGS...]` or `tether exec HOST --shell 'LINE'`",
                )
                .exit();
        }
    }
    if cli.encrypt {
        if let Some(why) = encrypt_refused(&cli) {
            use clap::CommandFactory as _;
            Cli::command()
                .error(clap::error::ErrorKind::ArgumentConflict, why)
                .exit();
        }
    }
    init_logging(&cli);
    let is_exec = matches!(cli.cmd, Cmd::Exec(_));
    let rt = if matches!(cli.cmd, Cmd::Serve(_)) {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether: error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let quiet = cli.quiet;
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if quiet < 2 {
                eprintln!("tether: error: {}", report(&e));
            }
            ExitCode::from(if is_exec { 255 } else { 1 })
        }
    }
}

/// The error and its causes, each cause once: our messages already name
/// their source, so a cause whose text is there is not repeated.
fn report(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// Why `--encrypt` (or TETHER_ENCRYPT) cannot apply to this command line.
fn encrypt_refused(cli: &Cli) -> Option<String> {
    match &cli.cmd {
        Cmd::Keygen { .. } => None,
        Cmd::Serve(_) => Some(
            "--encrypt (or TETHER_ENCRYPT) is for client commands: a server with a key offers encryption to every client that asks for it (and stops with --no-encrypt); drop --encrypt, or unset TETHER_ENCRYPT, for serve".into(),
        ),
        Cmd::Echo { .. } | Cmd::Time { .. } | Cmd::Ping { .. } => Some(
            "echo, time and ping use UDP, which tether neither encrypts nor authenticates, so --encrypt (or TETHER_ENCRYPT) cannot be met: drop it (or set TETHER_ENCRYPT=0) for them, or use the TCP commands (exec, get, put ...) for anything confidential".into(),
        ),
        _ if !key::configured(cli.key_file.as_deref()) => {
            Some(tether_host::client::ENCRYPT_NEEDS_KEY.to_string())
        }
        _ => None,
    }
}

/// The key, if one is configured (a configured but unusable one is an error).
fn load_key(cli: &Cli) -> anyhow::Result<Option<key::Key>> {
    match key::load(cli.key_file.as_deref())? {
        Some((k, from)) => {
            tracing::debug!("using the key from {from}");
            Ok(Some(k))
        }
        None => Ok(None),
    }
}

fn connect_opts(cli: &Cli) -> anyhow::Result<ConnectOpts> {
    Ok(ConnectOpts {
        retries: cli.retries.unwrap_or(0),
        retry_delay: cli.retry_delay,
        connect_timeout: cli.connect_timeout,
        key: load_key(cli)?,
        insecure: cli.insecure,
        encrypt: cli.encrypt,
    })
}

fn udp_opts(cli: &Cli, timeout: Duration) -> UdpOpts {
    UdpOpts {
        timeout,
        retries: cli.retries.unwrap_or(3),
    }
}

/// The last component of a remote path.
fn remote_name(remote: &str) -> Option<&str> {
    remote
        .rsplit('/')
        .find(|c| !c.is_empty() && *c != "." && *c != "..")
}

/// A byte rate in units that fit (B/s, KiB/s, MiB/s, GiB/s).
fn rate(bytes: u64, secs: f64) -> String {
    let per = bytes as f64 / secs.max(1e-6);
    match per {
        r if r >= 1024.0 * 1024.0 * 1024.0 => {
            format!("{:.2} GiB/s", r / (1024.0 * 1024.0 * 1024.0))
        }
        r if r >= 1024.0 * 1024.0 => format!("{:.1} MiB/s", r / (1024.0 * 1024.0)),
        r if r >= 1024.0 => format!("{:.1} KiB/s", r / 1024.0),
        r => format!("{r:.0} B/s"),
    }
}

fn summary(verb: &str, from: &str, to: &str, r: &Report) -> String {
    if r.identical {
        return format!(
            "{verb} {from} -> {to}: {} bytes, already there with the same SHA-256: nothing transferred",
            r.size
        );
    }
    let secs = r.elapsed.as_secs_f64();
    let mut s = format!(
        "{verb} {from} -> {to}: {} bytes, {} transferred",
        r.size, r.transferred
    );
    if r.resumed_at > 0 {
        s += &format!(" (resumed at {})", r.resumed_at);
    }
    if r.restarted {
        s += " (a partial that did not match was discarded)";
    }
    s += &format!(" in {secs:.2} s, {}", rate(r.transferred, secs));
    s
}

async fn interruptible<T>(
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
    note: String,
) -> anyhow::Result<T> {
    tokio::select! {
        r = fut => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ntether: interrupted; {note}");
            std::process::exit(130);
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let tcp = !matches!(
        cli.cmd,
        Cmd::Serve(_) | Cmd::Keygen { .. } | Cmd::Echo { .. } | Cmd::Time { .. } | Cmd::Ping { .. }
    );
    let copts = if tcp {
        connect_opts(&cli)?
    } else {
        ConnectOpts::default()
    };
    match &cli.cmd {
        Cmd::Keygen { path, force } => keygen(path, *force),
        Cmd::Serve(a) => serve_cmd(&cli, a).await,
        Cmd::Exec(a) => exec_cmd(a, &copts).await,
        Cmd::Shell { host } => Ok(shell(host, &copts).await? as u8),
        Cmd::Get(a) => get_cmd(&cli, a, &copts).await,
        Cmd::Put(a) => put_cmd(&cli, a, &copts).await,
        Cmd::Ls { host, path } => {
            let mut remote = connect(host, &copts).await?;
            let mut out = std::io::stdout().lock();
            fs::list(&mut remote, path.as_deref().unwrap_or(""), |e| {
                let _ = writeln!(out, "{}", fs::format_entry(e.name, e));
            })
            .await?;
            Ok(0)
        }
        Cmd::Stat { host, path } => {
            let mut remote = connect(host, &copts).await?;
            // The server names the last component; show the path as asked.
            let shown = path.trim_end_matches('/');
            fs::stat(&mut remote, path, |e| {
                let name = if shown.is_empty() { e.name } else { shown };
                println!("{}", fs::format_entry(name, e));
            })
            .await?;
            Ok(0)
        }
        Cmd::Rm { host, path } => {
            let mut remote = connect(host, &copts).await?;
            fs::remove(&mut remote, path).await?;
            Ok(0)
        }
        Cmd::Echo { host, text, udp } => {
            let opts = udp_opts(&cli, udp.timeout);
            udp_cmd(&cli, host, Message::Echo { text }, &opts).await
        }
        Cmd::Time { host, format, udp } => {
            let opts = udp_opts(&cli, udp.timeout);
            let format = format.as_deref().unwrap_or("");
            udp_cmd(&cli, host, Message::Time { format }, &opts).await
        }
        Cmd::Ping {
            host,
            count,
            interval,
            timeout,
        } => ping(host, *count, *interval, *timeout).await,
    }
}

fn keygen(path: &std::path::Path, force: bool) -> anyhow::Result<u8> {
    key::keygen(path, force)?;
    let p = path.display();
    println!(
        "wrote a new key to {p} ({})",
        tether_host::platform::PRIVATE
    );
    let env = tether_host::platform::env_hint(key::ENV_KEY_FILE, &p.to_string());
    eprintln!(
        "use it: on the server `tether serve --key-file {p} ...`; on each client `--key-file {p}` or {env}.\ncopy it to clients over a secure channel (scp, a password manager); anyone holding it can use the server."
    );
    Ok(0)
}

async fn serve_cmd(cli: &Cli, a: &ServeArgs) -> anyhow::Result<u8> {
    let key = load_key(cli)?;
    check_exposure(a.listen, key.is_some(), cli.insecure).map_err(anyhow::Error::msg)?;
    let mut cfg = ServerConfig::new(a.root.clone());
    cfg.allow_exec = a.allow_exec;
    cfg.max_connections = a.max_connections.max(1);
    cfg.handshake_timeout = a.handshake_timeout;
    cfg.idle_timeout = a.idle_timeout;
    cfg.shutdown_grace = a.shutdown_grace;
    cfg.offer_encryption = !a.no_encrypt;
    cfg.key = key;
    cfg.read_only = a.read_only;
    cfg.allow_cmds = (!a.allow_cmd.is_empty()).then(|| a.allow_cmd.clone());
    cfg.max_transfers = a.max_transfers.max(1);
    if !a.root.is_dir() {
        bail!(
            "--root '{}' is not a directory: create it or name another one",
            a.root.display()
        );
    }
    let bound = bind(a.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (TCP and UDP): is another server running there? pick another --listen port",
            a.listen
        )
    })?;
    let addr = bound.local_addr()?;
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    serve(cfg, bound, shutdown_signal()).await?;
    Ok(0)
}

async fn exec_cmd(a: &ExecArgs, copts: &ConnectOpts) -> anyhow::Result<u8> {
    let command = match (&a.shell, a.command.is_empty()) {
        (Some(line), _) => Cmdline::Shell(line.clone()),
        (None, false) => Cmdline::Argv(a.command.clone()),
        (None, true) => bail!(
            "no command given: write `tether exec HOST -- CMD [ARGS...]` or `tether exec HOST --shell 'LINE'`"
        ),
    };
    let mut remote = connect(&a.host, copts).await?;
    let status = exec(&mut remote, &command, a.timeout).await?;
    report_status(status);
    Ok(exit_code(status))
}

fn transfer_opts(cli: &Cli, t: &TransferArgs) -> TransferOpts {
    TransferOpts {
        force: t.force,
        resume: !t.no_resume,
        progress: cli.quiet == 0,
        limit_rate: t.limit_rate,
        retries: cli.retries.unwrap_or(0),
        retry_delay: cli.retry_delay,
    }
}

async fn get_cmd(cli: &Cli, a: &GetArgs, copts: &ConnectOpts) -> anyhow::Result<u8> {
    let name = || {
        remote_name(&a.remote).with_context(|| {
            format!(
                "'{}' does not end in a file name: give LOCAL, the name to save it as",
                a.remote
            )
        })
    };
    let local = match &a.local {
        None => PathBuf::from(name()?),
        Some(p) if p.is_dir() => p.join(name()?),
        Some(p) => p.clone(),
    };
    let opts = transfer_opts(cli, &a.t);
    let note = format!(
        "the partial download is kept in '{}'; run the same command again to resume",
        part_path(&local).display()
    );
    let r = interruptible(
        async {
            let mut remote = connect(&a.host, copts).await?;
            Ok(get(&mut remote, &a.remote, &local, &opts).await?)
        },
        note,
    )
    .await?;
    println!("{}  {}", hex::encode(r.digest), local.display());
    if cli.quiet == 0 {
        let from = format!("{}:{}", a.host, a.remote);
        eprintln!(
            "{}",
            summary("get", &from, &local.display().to_string(), &r)
        );
    }
    Ok(0)
}

async fn put_cmd(cli: &Cli, a: &PutArgs, copts: &ConnectOpts) -> anyhow::Result<u8> {
    let base = a
        .local
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("'{}' does not name a file", a.local.display()))?;
    let remote_path = match &a.remote {
        None => base.to_string(),
        Some(r) if r.is_empty() || r.ends_with('/') => format!("{r}{base}"),
        Some(r) => r.clone(),
    };
    let opts = transfer_opts(cli, &a.t);
    let r = interruptible(
        async {
            let mut remote = connect(&a.host, copts).await?;
            Ok(put(&mut remote, &a.local, &remote_path, &opts).await?)
        },
        "the server keeps the partial upload; run the same command again to resume".to_string(),
    )
    .await?;
    println!("{}  {}", hex::encode(r.digest), a.local.display());
    if cli.quiet == 0 {
        let to = format!("{}:{}", a.host, remote_path);
        eprintln!(
            "{}",
            summary("put", &a.local.display().to_string(), &to, &r)
        );
    }
    Ok(0)
}

/// Echo and Time over UDP: print the reply's text.
async fn udp_cmd(cli: &Cli, host: &HostSpec, m: Message<'_>, opts: &UdpOpts) -> anyhow::Result<u8> {
    let kind = m.kind();
    let c = UdpClient::open(host).await?;
    let r = c.request(m, opts).await?;
    match r.message() {
        Message::EchoReply { text } | Message::TimeReply { text, .. } => println!("{text}"),
        other => bail!("unexpected reply {:?} to {kind:?}", other.kind()),
    }
    if r.attempts > 1 && cli.quiet == 0 {
        eprintln!("(answered on attempt {})", r.attempts);
    }
    Ok(0)
}

async fn ping(
    host: &HostSpec,
    count: u32,
    interval: Duration,
    timeout: Duration,
) -> anyhow::Result<u8> {
    let c = UdpClient::open(host).await?;
    let opts = UdpOpts {
        timeout,
        retries: 0,
    };
    let mut rtts = Vec::new();
    for seq in 1..=count.max(1) {
        let started = std::time::Instant::now();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        match c.request(Message::Ping { stamp }, &opts).await {
            Ok(r) => {
                let ms = r.rtt.as_secs_f64() * 1e3;
                println!("reply from {}: seq={seq} time={ms:.3} ms", r.from);
                rtts.push(ms);
            }
            Err(tether_host::Error::NoReply { .. }) => {
                println!("no reply for seq={seq} within {timeout:?}");
            }
            Err(e) => return Err(e.into()),
        }
        if seq < count {
            let spent = started.elapsed();
            tokio::time::sleep(interval.saturating_sub(spent)).await;
        }
    }
    let sent = count.max(1) as usize;
    let loss = 100.0 * (sent - rtts.len()) as f64 / sent as f64;
    print!(
        "{host}: {sent} sent, {} received, {loss:.0}% loss",
        rtts.len()
    );
    if !rtts.is_empty() {
        let min = rtts.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = rtts.iter().cloned().fold(0.0, f64::max);
        let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
        print!(", rtt min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms");
    }
    println!();
    if rtts.is_empty() {
        bail!(
            "no replies from {host}: check that `tether serve` runs there and that UDP reaches it"
        );
    }
    Ok(0)
}

/// Ctrl-C or SIGTERM (on Windows Ctrl-C, Ctrl-Break, the console closing,
/// shutdown): a graceful stop; a second one stops at once.
async fn shutdown_signal() {
    let mut stop = tether_host::platform::StopSignals::new();
    stop.recv().await;
    tracing::info!("signal received: shutting down (send it again to stop at once)");
    tokio::spawn(async move {
        stop.recv().await;
        eprintln!("tether: second signal: stopping now");
        std::process::exit(130);
    });
}

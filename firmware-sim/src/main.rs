//! `tether-sim`: the simulated tether device on a TAP interface, or its demo
//! over the in-process virtual wire.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use sha2::{Digest as _, Sha256};
use smoltcp::phy::{self, FaultInjector, Medium, PcapMode, PcapWriter, TunTapInterface};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, Ipv4Address, Ipv4Cidr};
use tether_proto::client::blocking::Client;
use tether_proto::client::{ClientBuffers, ClientConfig, Error as ClientError, PutOptions};
use tether_proto::{datagram, Argv, Command, Header, Message, MAX_DATAGRAM};
use tether_sim::jobs::run_job;
use tether_sim::virt::{VirtualConfig, VirtualNet};
use tether_sim::{Key, SimConfig, SimDevice};

/// The simulated tether device: the firmware's no_std device logic on smoltcp.
///
/// By default it attaches to a TAP interface (created if it does not exist,
/// which needs root or CAP_NET_ADMIN and /dev/net/tun) and serves tether on
/// TCP and UDP, and ICMP echo, until SIGINT or SIGTERM.
///
/// With a key (--key-file, TETHER_KEY_FILE, or TETHER_KEY as 64 hex digits)
/// every TCP connection must authenticate and every frame is sealed; the key
/// is never taken from the command line.
#[derive(Debug, Parser)]
#[command(name = "tether-sim", version)]
struct Args {
    /// TAP interface to attach to.
    #[arg(long, default_value = "tap0")]
    tap: String,
    /// Device address and prefix.
    #[arg(long, default_value = "192.168.69.1/24", value_parser = parse_cidr)]
    ip: Ipv4Cidr,
    /// Default gateway.
    #[arg(long)]
    gateway: Option<Ipv4Address>,
    /// Device MAC address.
    #[arg(long, default_value = "02-00-00-00-00-01", value_parser = parse_mac)]
    mac: EthernetAddress,
    /// TCP and UDP port.
    #[arg(long, default_value_t = tether_proto::DEFAULT_PORT)]
    port: u16,
    /// TCP connections served at once.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Store capacity in KiB.
    #[arg(long, default_value_t = 2048)]
    store_kib: usize,
    /// Largest frame body the device negotiates.
    #[arg(long, default_value_t = 1024)]
    max_chunk: u32,
    /// Chance of dropping a packet, in percent (each direction).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    drop_chance: u8,
    /// Chance of corrupting a packet, in percent (each direction).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    corrupt_chance: u8,
    /// Drop packets larger than this many octets (0: no limit).
    #[arg(long, default_value_t = 0)]
    size_limit: usize,
    /// Drop packets sent beyond this many per shaping interval (0: no limit).
    #[arg(long, default_value_t = 0)]
    tx_rate_limit: u64,
    /// Drop packets received beyond this many per shaping interval (0: no limit).
    #[arg(long, default_value_t = 0)]
    rx_rate_limit: u64,
    /// Rate-limit interval in milliseconds.
    #[arg(long, default_value_t = 0)]
    shaping_interval: u64,
    /// Write a packet capture of the device's traffic.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Seed for the fault injector and TCP (default: random; the virtual demo: 1).
    #[arg(long)]
    seed: Option<u64>,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Run the demo over the in-process virtual wire (no TAP, no privileges).
    #[arg(long)]
    virtual_demo: bool,
    /// Size of the file the virtual demo uploads, in KiB.
    #[arg(long, default_value_t = 256)]
    demo_kib: usize,
    /// Print the device's RAM use and exit.
    #[arg(long)]
    ram: bool,
    /// Pre-shared key file (64 hex digits, as `tether keygen` writes it):
    /// connections must authenticate, frames are sealed.
    #[arg(long, value_name = "PATH", env = "TETHER_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// Serve a read-only status page over HTTP on port 80 (GET / and /status.json).
    #[arg(long)]
    http: bool,
    /// Milliseconds a connection has to complete Hello (and Auth).
    #[arg(long, value_name = "MS", default_value_t = SimConfig::default().handshake_timeout_ms)]
    handshake_timeout_ms: u32,
    /// Milliseconds an open connection may move no byte before it is closed.
    #[arg(long, value_name = "MS", default_value_t = SimConfig::default().idle_timeout_ms)]
    idle_timeout_ms: u32,
}

/// The key from --key-file / TETHER_KEY_FILE, or TETHER_KEY (hex).
fn load_key(a: &Args) -> anyhow::Result<Option<Key>> {
    let env = std::env::var_os("TETHER_KEY").filter(|v| !v.is_empty());
    match (&a.key_file, env) {
        (Some(_), Some(_)) => {
            bail!("both a key file (--key-file or TETHER_KEY_FILE) and TETHER_KEY are set: use one")
        }
        (Some(path), None) => {
            refuse_if_readable_by_others(path)?;
            let text = std::fs::read(path)
                .with_context(|| format!("cannot read key file {}", path.display()))?;
            let key = Key::parse(&text).with_context(|| format!("key file {}", path.display()))?;
            Ok(Some(key))
        }
        (None, Some(hex)) => {
            let key = Key::parse(hex.as_encoded_bytes()).context("TETHER_KEY")?;
            Ok(Some(key))
        }
        (None, None) => Ok(None),
    }
}

/// Like the host: a key file others can read is refused.
fn refuse_if_readable_by_others(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "key file {} is accessible to other users (mode {:o}): chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    Ok(())
}

fn auth_line(key: &Option<Key>) -> &'static str {
    if key.is_some() {
        "authentication: pre-shared key required, frames sealed (HMAC-SHA256)"
    } else {
        "authentication: NONE: anyone who can reach the device runs commands and writes files (use --key-file)"
    }
}

fn parse_cidr(s: &str) -> Result<Ipv4Cidr, String> {
    s.parse()
        .map_err(|()| format!("{s:?} is not an IPv4 address with a prefix (192.168.69.1/24)"))
}

fn parse_mac(s: &str) -> Result<EthernetAddress, String> {
    s.parse()
        .map_err(|()| format!("{s:?} is not a MAC address (02-00-00-00-00-01)"))
}

fn sim_config(a: &Args, seed: u64, unix_ms_at_zero: u64, key: Option<Key>) -> SimConfig {
    SimConfig {
        ip: a.ip,
        gateway: a.gateway,
        mac: a.mac,
        port: a.port,
        connections: a.connections.max(1),
        store_bytes: a.store_kib * 1024,
        max_chunk: a.max_chunk,
        unix_ms_at_zero,
        seed,
        key,
        verbose: !a.quiet,
        http: a.http,
        handshake_timeout_ms: a.handshake_timeout_ms,
        idle_timeout_ms: a.idle_timeout_ms,
        ..SimConfig::default()
    }
}

fn faults(a: &Args) -> String {
    let mut v = Vec::new();
    if a.drop_chance > 0 {
        v.push(format!("drop {}%", a.drop_chance));
    }
    if a.corrupt_chance > 0 {
        v.push(format!("corrupt {}%", a.corrupt_chance));
    }
    if a.size_limit > 0 {
        v.push(format!("size limit {}", a.size_limit));
    }
    if a.tx_rate_limit > 0 || a.rx_rate_limit > 0 {
        v.push(format!(
            "rate limit tx {} rx {} per {} ms",
            a.tx_rate_limit, a.rx_rate_limit, a.shaping_interval
        ));
    }
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn print_ram(cfg: &SimConfig) {
    let mut total = 0;
    for (what, bytes) in cfg.ram() {
        println!("  {bytes:>9} B  {what}");
        total += bytes;
    }
    println!("  {total:>9} B  total");
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.ram {
        print_ram(&sim_config(&args, 1, 0, None));
        return Ok(());
    }
    if args.virtual_demo {
        return virtual_demo(&args);
    }
    run_tap(&args)
}

fn run_tap(a: &Args) -> anyhow::Result<()> {
    if !std::path::Path::new("/dev/net/tun").exists() {
        bail!(
            "/dev/net/tun does not exist: this machine has no TUN/TAP support (try --virtual-demo)"
        );
    }
    let tap = TunTapInterface::new(&a.tap, Medium::Ethernet).with_context(|| {
        format!(
            "cannot attach to TAP interface {:?} (creating one needs root or CAP_NET_ADMIN)",
            a.tap
        )
    })?;
    let fd = tap.as_raw_fd();
    let sink: Box<dyn Write> = match &a.pcap {
        Some(p) => Box::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => Box::new(std::io::sink()),
    };
    let key = load_key(a)?;
    let seed = a.seed.unwrap_or_else(rand::random);
    let mut phy = FaultInjector::new(PcapWriter::new(tap, sink, PcapMode::Both), seed as u32);
    phy.set_drop_chance(a.drop_chance);
    phy.set_corrupt_chance(a.corrupt_chance);
    phy.set_max_packet_size(a.size_limit);
    phy.set_max_tx_rate(a.tx_rate_limit);
    phy.set_max_rx_rate(a.rx_rate_limit);
    phy.set_bucket_interval(Duration::from_millis(a.shaping_interval));

    let start = std::time::Instant::now();
    let now = || Instant::from_millis(start.elapsed().as_millis() as i64);
    let cfg = sim_config(a, seed, unix_now_ms(), key);
    let mut sim = SimDevice::new(cfg, &mut phy, now());

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handler")?;
    }
    if !a.quiet {
        eprintln!(
            "[tether-sim] device {} ({}) on {}, port {} tcp+udp, icmp echo; store {} KiB; faults: {}{}",
            a.ip,
            a.mac,
            a.tap,
            a.port,
            a.store_kib,
            faults(a),
            a.pcap
                .as_ref()
                .map(|p| format!("; pcap {}", p.display()))
                .unwrap_or_default()
        );
    }
    if a.http && !a.quiet {
        eprintln!("[tether-sim] status page: http://{}/", a.ip.address());
    }
    // Said even with --quiet: an open device should not go unnoticed.
    if !a.quiet || key.is_none() {
        eprintln!("[tether-sim] {}", auth_line(&key));
    }
    while !stop.load(Ordering::Relaxed) {
        let t = now();
        sim.poll(t, &mut phy);
        // A push or fetch a command queued: the device is a client until
        // it ends (it keeps serving its sessions meanwhile).
        if let Some((seq, job)) = sim.take_job() {
            let t0 = now();
            let r = run_job(&mut sim, &mut phy, &job, now, |d| {
                let _ = phy::wait(fd, Some(d));
                !stop.load(Ordering::Relaxed)
            });
            sim.finish_job(seq, &job, &r, (now() - t0).total_millis());
            continue;
        }
        let wait = sim.poll_delay(t).map_or(Duration::from_millis(100), |d| {
            d.min(Duration::from_millis(100))
        });
        // EINTR (a signal) just ends the wait early.
        let _ = phy::wait(fd, Some(wait));
    }
    if !a.quiet {
        let s = sim.dev.stats();
        eprintln!(
            "[tether-sim] stopping: {} connections, {} datagrams, frames {} in / {} out, {} errors sent",
            s.connections, s.datagrams, s.frames_in, s.frames_out, s.errors_sent
        );
    }
    Ok(())
}

/// The `make sim` demo, over the virtual wire with the in-process client.
fn virtual_demo(a: &Args) -> anyhow::Result<()> {
    let seed = a.seed.unwrap_or(1);
    let pcap: Option<Box<dyn Write>> = match &a.pcap {
        Some(p) => Some(Box::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    let key = load_key(a)?;
    let mut cfg = sim_config(a, seed, unix_now_ms(), key);
    cfg.verbose = false;
    let dev_ip = cfg.ip.address();
    let port = cfg.port;
    let mut net = VirtualNet::new(VirtualConfig {
        seed: seed as u32,
        drop_pct: a.drop_chance,
        corrupt_pct: a.corrupt_chance,
        size_limit: a.size_limit,
        tx_rate_limit: a.tx_rate_limit,
        rx_rate_limit: a.rx_rate_limit,
        shaping_interval: Duration::from_millis(a.shaping_interval),
        pcap,
        device: cfg,
    });
    println!(
        "== virtual wire: host {} <-> device {dev_ip}:{port}, faults: {}, seed {seed}",
        tether_sim::virt::HOST_IP,
        faults(a)
    );
    println!("== {}", auth_line(&key));
    let wall = std::time::Instant::now();
    let data: Vec<u8> = {
        let mut x = seed | 1;
        (0..a.demo_kib * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    for seq in 1..=2 {
        match net.icmp_ping(seq) {
            Some(rtt) => println!(
                "$ ping {dev_ip}  -> icmp echo reply seq={seq}, rtt {} ms (virtual)",
                rtt.total_millis()
            ),
            None => println!("$ ping {dev_ip}  -> no icmp echo reply for seq={seq}"),
        }
    }
    {
        let cfg = ClientConfig {
            agent: concat!("tether-sim-client/", env!("CARGO_PKG_VERSION")),
            max_header: 4096,
            max_chunk: 16 * 1024,
            key: key.map(|k| k.0),
            ..ClientConfig::DEFAULT
        };
        let mut arena = vec![0u8; ClientBuffers::arena_len(&cfg, 16 * 1024)];
        let bufs = ClientBuffers::split(&mut arena, &cfg).context("client buffers")?;
        let tcp = net.connect().context("connect")?;
        let mut c = Client::new(tcp, cfg, bufs, wall_ms)?;
        c.handshake(rand::random())
            .map_err(|e| why(&c, e))
            .context("handshake")?;
        let sess = c.session().context("no session after the handshake")?;
        println!(
            "== connected: {} (max_chunk {}, max_header {}{})",
            sess.agent,
            sess.max_chunk,
            sess.max_header,
            if sess.authenticated {
                ", authenticated, sealed"
            } else {
                ""
            }
        );
        for i in 0..3u64 {
            let t0 = c.transport().net().now();
            let stamp = c.ping(i).map_err(|e| why(&c, e))?;
            let rtt = c.transport().net().now() - t0;
            println!(
                "$ tether ping  -> pong {stamp}, rtt {} ms (virtual)",
                rtt.total_millis()
            );
        }
        for cmd in [&["uptime"][..], &["led", "on"], &["mem"]] {
            let mut b = vec![0u8; 64];
            let argv = Argv::join(cmd, &mut b).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let out = c
                .exec_output(Command::Argv(argv), None)
                .map_err(|e| why(&c, e))?;
            print!(
                "$ tether exec -- {}\n{}",
                cmd.join(" "),
                String::from_utf8_lossy(&out.stdout)
            );
            println!("  (exit {})", out.status.shell_code());
        }
        let t0 = c.transport().net().now();
        let force = PutOptions {
            force: true,
            resume: false,
        };
        let sent = c
            .put_slice("demo.bin", &data, force)
            .map_err(|e| why(&c, e))?;
        let t1 = c.transport().net().now();
        let (back, got) = c.get_vec("demo.bin").map_err(|e| why(&c, e))?;
        let t2 = c.transport().net().now();
        let mine: [u8; 32] = Sha256::digest(&back).into();
        println!(
            "$ tether put demo.bin ({} bytes) -> sha256 {} ({} ms virtual)",
            data.len(),
            hex::encode(sent.sha256),
            (t1 - t0).total_millis()
        );
        println!(
            "$ tether get demo.bin -> {} bytes, sha256 {} ({} ms virtual)",
            back.len(),
            hex::encode(mine),
            (t2 - t1).total_millis()
        );
        if back != data || mine != sent.sha256 || got.sha256 != sent.sha256 {
            bail!("the file that came back differs from the one sent");
        }
        println!("   round trip byte-exact: SHA-256 match");
        let out = c
            .exec_output(Command::Shell("sha256 demo.bin"), None)
            .map_err(|e| why(&c, e))?;
        print!(
            "$ tether exec -- sha256 demo.bin\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let mut d = [0u8; MAX_DATAGRAM];
    let q = datagram::encode_request(&Header::new(1, Message::Time { format: "" }), &mut d)?;
    let r = net.udp_request(q, 3)?;
    match datagram::parse_reply(&r).map(|h| h.message) {
        Ok(Message::TimeReply { unix_ms, text }) => {
            println!("$ tether time (udp) -> {text} ({unix_ms} ms since the epoch)")
        }
        other => bail!("unexpected time reply: {other:?}"),
    }
    let echo = Message::Echo {
        text: "hello device",
    };
    let r = net.udp_request(datagram::encode_request(&Header::new(2, echo), &mut d)?, 3)?;
    match datagram::parse_reply(&r).map(|h| h.message) {
        Ok(Message::EchoReply { text }) => println!("$ tether echo (udp) 'hello device' -> {text}"),
        other => bail!("unexpected echo reply: {other:?}"),
    }
    let s = net.device.dev.stats();
    println!(
        "== device: {} connection(s), {} datagrams, frames {} in / {} out, {} errors; wire: {} Ethernet frames; {} ms virtual, {} ms real",
        s.connections,
        s.datagrams,
        s.frames_in,
        s.frames_out,
        s.errors_sent,
        net.frames(),
        net.now().total_millis(),
        wall.elapsed().as_millis()
    );
    Ok(())
}

/// The demo client's clock (for its handshake deadline): real milliseconds
/// since the demo started.
fn wall_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// A client error with the server's words, when it gave any.
fn why<T, C>(c: &Client<'_, T, C>, e: ClientError<T::Error>) -> anyhow::Error
where
    T: embedded_io::Read + embedded_io::Write,
    T::Error: Send + Sync + 'static,
    C: tether_proto::client::Clock,
{
    match c.message() {
        "" => anyhow::Error::new(e),
        m => anyhow::anyhow!("{e}: {m}"),
    }
}

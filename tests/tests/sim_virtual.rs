//! Client ↔ simulated device over the virtual wire: two smoltcp stacks in
//! memory, a seeded fault injector, a virtual clock. Deterministic, no
//! privileges, no timing assertions.
//!
//! Well-behaved requests go through the core's blocking client driver
//! (`tether_proto::client::blocking`) over the virtual TCP socket, as a
//! firmware or a test links it; frames that must misbehave (crafted,
//! replayed, reordered, tampered) through the raw test peer
//! (`tether_tests::peer`), which seals with the core's one frame writer.

use sha2::{Digest as _, Sha256};
use tether_proto::client::blocking::Client;
use tether_proto::client::{ClientBuffers, ClientConfig, Error, ExecOutput, Flow, PutOptions};
use tether_proto::codec::Limits;
use tether_proto::handshake::ClientHandshake;
use tether_proto::io::FrameReader;
use tether_proto::message::{EntryKind, Proof};
use tether_proto::{datagram, Argv, Caps, Command, ErrorCode, ExitStatus, Header, Message};
use tether_proto::{encode_frame, MAX_DATAGRAM};
use tether_sim::embedded_io;
use tether_sim::smoltcp::time::Duration;
use tether_sim::virt::{NetError, VirtualConfig, VirtualNet, VirtualTcp};
use tether_sim::{Key, SimConfig};
use tether_tests::peer::{self, nonce, Peer, Virt};

fn net(drop_pct: u8, corrupt_pct: u8, store_bytes: usize) -> VirtualNet {
    VirtualNet::new(VirtualConfig {
        seed: 0x1234_5678,
        drop_pct,
        corrupt_pct,
        device: SimConfig {
            store_bytes,
            ..SimConfig::default()
        },
        ..VirtualConfig::default()
    })
}

/// The core's blocking client over the virtual wire, its buffers in `'m`.
type Sim<'m, 'n> = Client<'m, VirtualTcp<'n>, fn() -> u64>;
type E = Error<NetError>;

/// What the test client offers: more than the device takes (512-byte
/// headers, 1 KiB chunks), so HelloAck shows the device's own limits.
fn config(key: Option<[u8; 32]>) -> ClientConfig {
    ClientConfig {
        agent: "sim-virtual-test",
        max_header: 4096,
        max_chunk: 16 * 1024,
        key,
        ..ClientConfig::DEFAULT
    }
}

/// Room for one client's buffers (keyed or not).
fn arena() -> Vec<u8> {
    vec![0u8; ClientBuffers::arena_len(&config(Some([0; 32])), 16 * 1024)]
}

/// The client's clock, for its handshake deadline: real milliseconds.
fn wall_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// A client and how its handshake ended (the client is kept to read the
/// server's text on failure).
fn try_connect<'m, 'n>(
    n: &'n mut VirtualNet,
    mem: &'m mut [u8],
    key: Option<[u8; 32]>,
) -> (Sim<'m, 'n>, Result<(), E>) {
    let cfg = config(key);
    let bufs = ClientBuffers::split(mem, &cfg).expect("arena");
    let tcp = n.connect().expect("connect over the virtual wire");
    let mut c: Sim<'m, 'n> = Client::new(tcp, cfg, bufs, wall_ms as fn() -> u64).expect("client");
    let r = c.handshake(rand_nonce());
    (c, r)
}

fn rand_nonce() -> [u8; 16] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    nonce(N.fetch_add(1, Ordering::Relaxed))
}

fn connect<'m, 'n>(n: &'n mut VirtualNet, mem: &'m mut [u8]) -> Sim<'m, 'n> {
    let (c, r) = try_connect(n, mem, None);
    r.unwrap_or_else(|e| panic!("handshake: {e}: {}", c.message()));
    c
}

/// The server's refusal of the handshake: its code and text.
fn connect_refused(n: &mut VirtualNet, key: Option<[u8; 32]>) -> (ErrorCode, String) {
    let mut mem = arena();
    let (c, r) = try_connect(n, &mut mem, key);
    match r {
        Err(Error::Refused(code)) => (code, c.message().to_string()),
        Err(e) => panic!("expected the server's Error, got {e}: {}", c.message()),
        Ok(()) => panic!("expected the server's Error, got a session"),
    }
}

/// The server's Error for the request `f` makes: its code and text.
fn refused<'m, 'n, T>(
    c: &mut Sim<'m, 'n>,
    f: impl FnOnce(&mut Sim<'m, 'n>) -> Result<T, E>,
) -> (ErrorCode, String) {
    match f(c) {
        Err(Error::Server(code)) => (code, c.message().to_string()),
        Err(e) => panic!("expected an Error frame, got {e}: {}", c.message()),
        Ok(_) => panic!("expected an Error frame, got success"),
    }
}

fn exec(c: &mut Sim<'_, '_>, args: &[&str]) -> Result<ExecOutput, E> {
    let mut b = vec![0u8; args.iter().map(|a| a.len() + 1).sum()];
    let argv = Argv::join(args, &mut b).expect("no NUL in the arguments");
    c.exec_output(Command::Argv(argv), None)
}

/// Upload `data`; returns the SHA-256 the device confirmed.
fn put(c: &mut Sim<'_, '_>, path: &str, data: &[u8], force: bool) -> Result<[u8; 32], E> {
    let opts = PutOptions {
        force,
        resume: false,
    };
    let t = c.put_slice(path, data, opts)?;
    assert_eq!((t.size, t.offset), (data.len() as u64, 0));
    Ok(t.sha256)
}

/// Download a whole file (size and SHA-256 verified by the driver).
fn get(c: &mut Sim<'_, '_>, path: &str) -> Result<Vec<u8>, E> {
    let (v, t) = c.get_vec(path)?;
    assert_eq!(t.size, v.len() as u64);
    assert_eq!(t.sha256, <[u8; 32]>::from(Sha256::digest(&v)));
    Ok(v)
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn frame(h: Header<'_>, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 4096 + body.len()];
    let n = encode_frame(&h, body, &mut b).unwrap().len();
    b.truncate(n);
    b
}

/// A raw peer on a new connection, past Hello (and Auth with `key`).
fn peer(n: &mut VirtualNet, key: Option<[u8; 32]>) -> Peer<'_> {
    let mut p = Peer::new(Virt(n.connect().expect("connect")));
    p.handshake(key, rand_nonce()).expect("handshake");
    p
}

/// The next frame must be an Error: its request id and code (on a keyed
/// session it must be sealed and verify).
fn error_frame(p: &mut Peer<'_>) -> (u32, ErrorCode) {
    let g = p.recv_checked().expect("a frame");
    match g.error() {
        Some((code, _)) => (g.id, code),
        None => panic!("expected Error, got {}", g.describe()),
    }
}

/// One request as a datagram; the reply datagram.
fn udp(n: &mut VirtualNet, h: Header<'_>) -> Vec<u8> {
    let mut d = [0u8; MAX_DATAGRAM];
    let q = datagram::encode_request(&h, &mut d).expect("fits a datagram");
    n.udp_request(q, 0).expect("a datagram reply")
}

/// A reply datagram's header (it must be one whole frame).
fn reply(r: &[u8]) -> Header<'_> {
    datagram::parse_reply(r).expect("the reply is one whole frame")
}

#[test]
fn every_message_kind() {
    let mut n = net(0, 0, 256 * 1024);
    {
        let mut mem = arena();
        let mut c = connect(&mut n, &mut mem);
        // Hello / HelloAck: the device's limits.
        let s = c.session().expect("a session").clone();
        assert_eq!((s.max_header, s.max_chunk), (512, 1024));
        assert!(s.agent.starts_with("tether-sim/"));
        assert!(!s.authenticated);
        // Ping / Pong, Echo / EchoReply, Time / TimeReply over TCP.
        assert_eq!(c.ping(42).unwrap(), 42);
        let mut text = [0u8; 64];
        assert_eq!(c.echo("Hello, device", &mut text).unwrap(), "HELLO, DEVICE");
        let t = c.time("%Y-%m-%d", &mut text).unwrap();
        assert!(t.unix_ms >= 1_795_305_600_000);
        assert_eq!(t.text, "2026-11-22");
        // Exec / Output / Exit.
        let out = exec(&mut c, &["help"]).unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        for cmd in [
            "help", "echo", "uptime", "mem", "stats", "led", "reboot", "sha256", "cat",
        ] {
            assert!(help.contains(cmd), "help lacks {cmd}:\n{help}");
        }
        let out = c.exec_output(Command::Shell("led on"), None).unwrap();
        assert_eq!(
            (out.stdout, out.status),
            (b"led on\n".to_vec(), ExitStatus::Code(0))
        );
        let out = exec(&mut c, &["led", "sideways"]).unwrap();
        assert_eq!(out.status, ExitStatus::Code(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage: led"));
        let (code, m) = refused(&mut c, |c| exec(c, &["format", "c:"]));
        assert_eq!(code, ErrorCode::EXEC_FAILED);
        assert!(m.contains("format"), "{m}");
        // Put / PutReady / Data / Done, Get / FileInfo / Data / Done.
        let file = data(10_000, 1);
        let digest: [u8; 32] = Sha256::digest(&file).into();
        assert_eq!(put(&mut c, "./notes.bin", &file, false).unwrap(), digest);
        assert_eq!(get(&mut c, "notes.bin").unwrap(), file);
        let out = exec(&mut c, &["sha256", "notes.bin"]).unwrap();
        assert!(String::from_utf8(out.stdout)
            .unwrap()
            .starts_with(&hex(&digest)));
        put(&mut c, "hello.txt", b"hi there\n", false).unwrap();
        let out = exec(&mut c, &["cat", "hello.txt"]).unwrap();
        assert_eq!(out.stdout, b"hi there\n");
        // Stat / StatReply, List / ListEntry / Done.
        let e = c.stat("notes.bin").unwrap();
        assert_eq!((e.kind, e.size), (EntryKind::File, 10_000));
        assert_eq!(c.stat("").unwrap().kind, EntryKind::Dir);
        let names: Vec<_> = c
            .list_vec("")
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.size))
            .collect();
        assert_eq!(
            names,
            [
                ("hello.txt".to_string(), 9),
                ("notes.bin".to_string(), 10_000)
            ]
        );
        // Remove / Done; then Error NOT_FOUND.
        c.remove("hello.txt").unwrap();
        assert_eq!(
            refused(&mut c, |c| c.stat("hello.txt")).0,
            ErrorCode::NOT_FOUND
        );
        let (code, _) = refused(&mut c, |c| put(c, "notes.bin", b"x", false));
        assert_eq!(code, ErrorCode::EXISTS);
        // The client's own Cancel: the first piece cancels the download,
        // the call ends Cancelled, and the connection goes on.
        let big = data(200_000, 2);
        put(&mut c, "big.bin", &big, false).unwrap();
        let mut got = 0;
        let r = c.get_with("big.bin", None, |_, b: &[u8]| {
            got += b.len();
            Flow::Cancel
        });
        assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
        assert!(got > 0 && got < 200_000, "{got}");
        assert_eq!(c.ping(8).unwrap(), 8);
    }
    {
        // Cancel on the wire: a download stops between chunks with Error
        // CANCELLED for its id.
        let mut p = peer(&mut n, None);
        let get = Message::Get {
            path: "big.bin",
            offset: 0,
        };
        p.request(1, get, &[]).unwrap();
        let first = p.recv_checked().unwrap();
        assert!(
            matches!(first.message(), Message::FileInfo { size: 200_000, .. }),
            "{}",
            first.describe()
        );
        p.request(0, Message::Cancel { target: 1 }, &[]).unwrap();
        let mut got = 0;
        let end = loop {
            let g = p.recv_checked().unwrap();
            match g.message() {
                Message::Data => got += g.body.len(),
                _ => break g,
            }
        };
        assert!(got < 200_000, "the whole file came despite the Cancel");
        assert_eq!(
            (end.id, end.error().map(|e| e.0)),
            (1, Some(ErrorCode::CANCELLED)),
            "{}",
            end.describe()
        );
        // Auth is refused: this device offers no authentication.
        p.request(0, Message::Auth(Proof { mac: [0; 32] }), &[])
            .unwrap();
        assert_eq!(error_frame(&mut p).1, ErrorCode::UNEXPECTED);
        p.ping_ok(7).unwrap();
    }
    assert_eq!(n.device.led_log, [true]);
    // UDP: Ping, Echo, Time; anything else is UNEXPECTED.
    let r = udp(&mut n, Header::new(1, Message::Ping { stamp: 9 }));
    assert_eq!(reply(&r), Header::new(1, Message::Pong { stamp: 9 }));
    let r = udp(&mut n, Header::new(2, Message::Echo { text: "udp" }));
    assert_eq!(
        reply(&r),
        Header::new(2, Message::EchoReply { text: "UDP" })
    );
    let r = udp(&mut n, Header::new(3, Message::Time { format: "%s" }));
    assert!(matches!(reply(&r).message, Message::TimeReply { .. }));
    let r = udp(&mut n, Header::new(4, Message::Stat { path: "x" }));
    assert!(matches!(
        reply(&r).message,
        Message::Error {
            code: ErrorCode::UNEXPECTED,
            ..
        }
    ));
    assert_eq!(n.device.dev.stats().datagrams, 4);
    // ICMP echo is answered by the device's stack.
    assert!(n.icmp_ping(1).is_some());
    assert!(n.icmp_ping(2).is_some());

    // reboot: the connection is reset, counters and LED start over, files survive.
    {
        let mut mem = arena();
        let mut c = connect(&mut n, &mut mem);
        assert_eq!(exec(&mut c, &["reboot"]).unwrap().stdout, b"rebooting\n");
        assert!(c.ping(1).is_err(), "the connection survived a reboot");
    }
    assert_eq!(n.device.reboots, 1);
    assert_eq!(n.device.led_log, [true, false]);
    let mut mem = arena();
    let mut c = connect(&mut n, &mut mem);
    let stats = String::from_utf8(exec(&mut c, &["stats"]).unwrap().stdout).unwrap();
    assert!(stats.contains("connections: 1\n"), "{stats}");
    assert_eq!(get(&mut c, "notes.bin").unwrap(), data(10_000, 1));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// 1 MiB up and back down, byte-exact, through 5% loss and 1% corruption
/// each way. The virtual-time budget bounds it: it cannot hang.
#[test]
fn one_mib_round_trip_through_loss_and_corruption() {
    let file = data(1 << 20, 3);
    let digest: [u8; 32] = Sha256::digest(&file).into();
    for (drop, corrupt) in [(0, 0), (5, 1)] {
        let mut n = net(drop, corrupt, 2 << 20);
        n.patience = Duration::from_secs(600);
        let wall = std::time::Instant::now();
        {
            let mut mem = arena();
            let mut c = connect(&mut n, &mut mem);
            assert_eq!(put(&mut c, "big.bin", &file, false).unwrap(), digest);
            let back = get(&mut c, "big.bin").unwrap();
            assert!(back == file, "the file came back different");
        }
        let s = n.device.dev.stats();
        println!(
            "1 MiB put+get, drop {drop}% corrupt {corrupt}%: {} ms virtual, {} ms real, {} Ethernet frames, {} device frames",
            n.now().total_millis(),
            wall.elapsed().as_millis(),
            n.frames(),
            s.frames_in + s.frames_out
        );
        assert_eq!((s.files_stored, s.files_sent, s.errors_sent), (1, 1, 0));
        if drop > 0 {
            // Lost segments were retransmitted on timers: the clock moved.
            assert!(n.now().total_millis() > 0);
        }
    }
}

#[test]
fn hostile_frames_get_errors_and_the_device_keeps_serving() {
    let mut n = net(0, 0, 64 * 1024);
    {
        let mut p = peer(&mut n, None);
        // A header of an unknown kind, checksum valid: Error with its id, and on.
        let mut f = frame(Header::new(77, Message::Ping { stamp: 1 }), &[]);
        f[19] = 200;
        peer::fix_checksum(&mut f);
        p.send(&f).unwrap();
        assert_eq!(error_frame(&mut p), (77, ErrorCode::UNKNOWN_KIND));
        // A body where none belongs.
        p.request(78, Message::Ping { stamp: 2 }, b"junk").unwrap();
        assert_eq!(error_frame(&mut p), (78, ErrorCode::UNEXPECTED));
        // An upload whose digest is wrong is not committed.
        let put = Message::Put {
            path: "bad",
            size: 3,
            force: false,
            resume: false,
        };
        p.request(5, put, &[]).unwrap();
        let g = p.recv_checked().unwrap();
        assert!(
            g.id == 5 && matches!(g.message(), Message::PutReady { .. }),
            "{}",
            g.describe()
        );
        p.request(5, Message::Data, b"abc").unwrap();
        let done = Message::Done {
            bytes: 3,
            sha256: Some([1; 32]),
        };
        p.request(5, done, &[]).unwrap();
        assert_eq!(error_frame(&mut p), (5, ErrorCode::DIGEST_MISMATCH));
        p.request(6, Message::Stat { path: "bad" }, &[]).unwrap();
        assert_eq!(error_frame(&mut p), (6, ErrorCode::NOT_FOUND));
        p.ping_ok(3).unwrap();
        // Garbage: Error BAD_FRAME (id 0), then the device closes.
        p.send(b"\x00\x01garbage that is not a frame").unwrap();
        assert_eq!(error_frame(&mut p), (0, ErrorCode::BAD_FRAME));
        p.expect_closed()
            .expect("the connection stayed open after garbage");
    }
    {
        // A body over the negotiated chunk: BODY_TOO_LARGE, closed.
        let mut p = peer(&mut n, None);
        p.request(5, Message::Data, &[0; 1025]).unwrap();
        assert_eq!(error_frame(&mut p), (0, ErrorCode::BODY_TOO_LARGE));
        p.expect_closed().unwrap();
    }
    {
        // Not Hello first: Error, closed.
        let mut tcp = n.connect().unwrap();
        let ping = frame(Header::new(1, Message::Ping { stamp: 0 }), &[]);
        embedded_io::Write::write(&mut tcp, &ping).unwrap();
        let mut buf = [0u8; 256];
        let k = embedded_io::Read::read(&mut tcp, &mut buf).unwrap();
        let h = Header::parse(&buf[18..18 + usize::from(buf[4])]).unwrap();
        assert!(k > 18);
        assert!(matches!(
            h.message,
            Message::Error {
                code: ErrorCode::UNEXPECTED,
                ..
            }
        ));
    }
    // UDP: a datagram that is not a frame, one cut short, one that asks too much.
    let r = n.udp_request(b"not a frame", 0).unwrap();
    assert!(matches!(
        reply(&r).message,
        Message::Error {
            code: ErrorCode::BAD_FRAME,
            ..
        }
    ));
    let mut d = [0u8; MAX_DATAGRAM];
    let ping = Header::new(1, Message::Ping { stamp: 1 });
    let q = datagram::encode_request(&ping, &mut d).unwrap();
    let r = n.udp_request(&q[..q.len() - 1], 0).unwrap();
    assert!(matches!(
        reply(&r).message,
        Message::Error {
            code: ErrorCode::BAD_FRAME,
            ..
        }
    ));
    let fmt = "%Y".repeat(100);
    let r = udp(&mut n, Header::new(2, Message::Time { format: &fmt }));
    assert!(matches!(
        reply(&r).message,
        Message::Error {
            code: ErrorCode::TOO_LARGE,
            ..
        }
    ));
    // And the device still serves.
    let mut mem = arena();
    let mut c = connect(&mut n, &mut mem);
    assert_eq!(c.ping(9).unwrap(), 9);
    let bad = n_bad_frames(&mut c);
    assert!(bad >= 4, "{bad}");
}

fn n_bad_frames(c: &mut Sim<'_, '_>) -> u64 {
    let s = String::from_utf8(exec(c, &["stats"]).unwrap().stdout).unwrap();
    let line = s.lines().find(|l| l.starts_with("errors:")).unwrap();
    line.split(", ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_full_store_gives_a_clear_error() {
    let mut n = net(0, 0, 64 * 1024);
    let mut mem = arena();
    let mut c = connect(&mut n, &mut mem);
    put(&mut c, "a.bin", &data(40 * 1024, 4), false).unwrap();
    let (code, m) = refused(&mut c, |c| put(c, "b.bin", &data(40 * 1024, 5), false));
    assert_eq!(code, ErrorCode::NO_SPACE);
    assert_eq!(m, "not enough space: 40960 bytes needed, 24576 free");
    // Replacing needs room for both copies until the commit.
    let (code, _) = refused(&mut c, |c| put(c, "a.bin", &data(30 * 1024, 6), true));
    assert_eq!(code, ErrorCode::NO_SPACE);
    // Nothing half-written is left behind, the old file is intact.
    let mem = String::from_utf8(exec(&mut c, &["mem"]).unwrap().stdout).unwrap();
    assert!(
        mem.contains("store: 40960 of 65536 B used, 1 of 32 files, 0 upload(s)"),
        "{mem}"
    );
    assert_eq!(get(&mut c, "a.bin").unwrap(), data(40 * 1024, 4));
    c.remove("a.bin").unwrap();
    put(&mut c, "b.bin", &data(40 * 1024, 5), false).unwrap();
    // File slots run out too.
    for i in 0..31 {
        put(&mut c, &format!("f{i}"), b"x", false).unwrap();
    }
    let (code, m) = refused(&mut c, |c| put(c, "one-too-many", b"x", false));
    assert_eq!(code, ErrorCode::NO_SPACE);
    assert_eq!(m, "store full: all 32 file slots in use");
    // A name over the store's limit.
    let long = "n".repeat(49);
    let (code, m) = refused(&mut c, |c| put(c, &long, b"x", true));
    assert_eq!(code, ErrorCode::PATH_REFUSED);
    assert!(m.contains("limit of 48 bytes"), "{m}");
}

// ---- Authentication and sealing (issue 5) ----

const KEY: [u8; 32] = *b"tether sim-virtual test key 0001";

fn keyed_net(store_bytes: usize) -> VirtualNet {
    VirtualNet::new(VirtualConfig {
        seed: 0x5ec0_0001,
        device: SimConfig {
            store_bytes,
            key: Some(Key(KEY)),
            ..SimConfig::default()
        },
        ..VirtualConfig::default()
    })
}

fn connect_keyed<'m, 'n>(n: &'n mut VirtualNet, mem: &'m mut [u8]) -> Sim<'m, 'n> {
    let (c, r) = try_connect(n, mem, Some(KEY));
    r.unwrap_or_else(|e| panic!("authenticated handshake: {e}: {}", c.message()));
    c
}

/// Read one frame from a raw connection: its header (unsealed frames only).
fn raw_frame(tcp: &mut VirtualTcp<'_>) -> Option<Vec<u8>> {
    let mut rd = FrameReader::new(tcp, vec![0u8; 1024], vec![0u8; 64], Limits::HANDSHAKE);
    let h = rd.read_frame().ok()?.header.to_vec();
    rd.skip_body().ok()?;
    Some(h)
}

fn raw_error(tcp: &mut VirtualTcp<'_>) -> (u32, ErrorCode, String) {
    let h = raw_frame(tcp).expect("an Error frame");
    match Header::parse(&h).unwrap() {
        Header {
            request_id,
            message: Message::Error { code, message },
        } => (request_id, code, message.to_string()),
        h => panic!("expected Error, got {h:?}"),
    }
}

/// Whether the device closed the connection (after what it had sent).
fn closed(tcp: &mut VirtualTcp<'_>) -> bool {
    let mut b = [0u8; 64];
    matches!(embedded_io::Read::read(tcp, &mut b), Ok(0) | Err(_))
}

fn raw_send(tcp: &mut VirtualTcp<'_>, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let k = embedded_io::Write::write(tcp, rest).expect("write");
        rest = &rest[k..];
    }
}

#[test]
fn authenticated_session_end_to_end() {
    let mut n = keyed_net(256 * 1024);
    {
        let mut mem = arena();
        let mut c = connect_keyed(&mut n, &mut mem);
        let s = c.session().expect("a session");
        assert!(s.authenticated);
        assert!(s.caps.contains(Caps::AUTH_PSK.union(Caps::SEAL)));
        assert_eq!(c.ping(5).unwrap(), 5);
        let mut text = [0u8; 16];
        assert_eq!(c.echo("sealed", &mut text).unwrap(), "SEALED");
        let out = exec(&mut c, &["led", "on"]).unwrap();
        assert_eq!(out.status, ExitStatus::Code(0));
        let file = data(64 * 1024, 9);
        let digest: [u8; 32] = Sha256::digest(&file).into();
        assert_eq!(put(&mut c, "sealed.bin", &file, false).unwrap(), digest);
        assert!(
            get(&mut c, "sealed.bin").unwrap() == file,
            "64 KiB came back different"
        );
        assert_eq!(c.list_vec("").unwrap().len(), 1);
        let out = exec(&mut c, &["sha256", "sealed.bin"]).unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(&hex(&digest)));
        // Exact one-chunk and empty files.
        let one = data(1024, 10);
        put(&mut c, "one.bin", &one, false).unwrap();
        assert_eq!(get(&mut c, "one.bin").unwrap(), one);
        put(&mut c, "empty", b"", false).unwrap();
        assert_eq!(get(&mut c, "empty").unwrap(), b"");
    }
    let s = n.device.dev.stats();
    assert_eq!(
        (
            s.auth_failures,
            s.integrity_failures,
            s.errors_sent,
            s.files_stored
        ),
        (0, 0, 0, 3)
    );
    assert_eq!(n.device.led_log, [true]);
}

#[test]
fn wrong_or_missing_keys_are_refused_and_failures_back_off() {
    let mut n = keyed_net(64 * 1024);
    // No key.
    let (code, m) = connect_refused(&mut n, None);
    assert_eq!(code, ErrorCode::AUTH_REQUIRED);
    assert!(m.contains("pre-shared key"), "{m}");
    // A keyed client refuses an unkeyed device (no downgrade).
    let mut open = net(0, 0, 64 * 1024);
    let mut mem = arena();
    let (_, r) = try_connect(&mut open, &mut mem, Some(KEY));
    assert!(matches!(r, Err(Error::Handshake(_))), "{r:?}");
    // Wrong key.
    let (code, m) = connect_refused(&mut n, Some([0x55; 32]));
    assert_eq!(code, ErrorCode::AUTH_FAILED);
    assert!(m.contains("refused for 1 s"), "{m}");
    // The same address is held back for a second, even with the right key...
    let (code, m) = connect_refused(&mut n, Some(KEY));
    assert_eq!(code, ErrorCode::BUSY);
    assert!(m.contains("192.168.69.100"), "{m}");
    // ...then served.
    n.advance(Duration::from_secs(1));
    let mut mem = arena();
    let mut c = connect_keyed(&mut n, &mut mem);
    assert_eq!(c.ping(1).unwrap(), 1);
    drop(c);
    let s = n.device.dev.stats();
    assert_eq!((s.auth_failures, s.backoff_refusals), (1, 1));
}

#[test]
fn nothing_before_auth_and_silent_clients_time_out() {
    let mut n = keyed_net(64 * 1024);
    {
        // Hello, then a request instead of Auth: AUTH_REQUIRED with its id,
        // closed, and the command did not run.
        let mut tcp = n.connect().unwrap();
        let hs = ClientHandshake::new(Some(KEY), [7; 16], 4096, 4096, Caps::empty(), "raw");
        raw_send(
            &mut tcp,
            &frame(Header::new(0, Message::Hello(hs.hello().clone())), &[]),
        );
        let ack = raw_frame(&mut tcp).unwrap();
        assert!(matches!(
            Header::parse(&ack).unwrap().message,
            Message::HelloAck(_)
        ));
        let mut b = [0u8; 16];
        let argv = Argv::join(&["led", "on"], &mut b).unwrap();
        let exec = Message::Exec(tether_proto::Exec {
            command: Command::Argv(argv),
            timeout_ms: None,
        });
        raw_send(&mut tcp, &frame(Header::new(3, exec), &[]));
        let (id, code, _) = raw_error(&mut tcp);
        assert_eq!((id, code), (3, ErrorCode::AUTH_REQUIRED));
        assert!(closed(&mut tcp));
    }
    assert!(n.device.led_log.is_empty(), "a command ran before Auth");
    {
        // A client that says nothing is closed at the handshake deadline.
        let mut tcp = n.connect().unwrap();
        let t0 = tcp.net().now();
        let (id, code, m) = raw_error(&mut tcp);
        assert_eq!((id, code), (0, ErrorCode::TIMEOUT), "{m}");
        assert!(tcp.net().now() - t0 >= Duration::from_secs(10));
        assert!(closed(&mut tcp));
        // This client never closes its side: the device does not keep the
        // slot waiting for it past the close grace.
        assert_eq!(tcp.net().device.slots_in_use(), 1);
        tcp.net().advance(Duration::from_secs(3));
        assert_eq!(tcp.net().device.slots_in_use(), 0);
    }
    {
        // One that stops half-way through Hello, the same.
        let mut tcp = n.connect().unwrap();
        let hs = ClientHandshake::new(Some(KEY), [8; 16], 4096, 4096, Caps::empty(), "slow");
        let hello = frame(Header::new(0, Message::Hello(hs.hello().clone())), &[]);
        raw_send(&mut tcp, &hello[..20]);
        assert_eq!(raw_error(&mut tcp).1, ErrorCode::TIMEOUT);
        assert!(closed(&mut tcp));
    }
    // Well-behaved clients are still served.
    let mut mem = arena();
    let mut c = connect_keyed(&mut n, &mut mem);
    assert_eq!(c.ping(2).unwrap(), 2);
    drop(c);
    assert_eq!(n.device.dev.stats().timeouts, 2);
}

/// The sealed frames of an upload of `file` to `name` (request id 1),
/// each taking the session's next sequence number, built and not sent:
/// the caller tampers with them, then sends them. Put and PutReady have
/// gone both ways already.
fn sealed_put_frames(p: &mut Peer<'_>, name: &str, file: &[u8]) -> Vec<Vec<u8>> {
    let put = Message::Put {
        path: name,
        size: file.len() as u64,
        force: true,
        resume: false,
    };
    p.request(1, put, &[]).unwrap();
    let g = p.recv_checked().unwrap();
    assert!(
        g.id == 1 && matches!(g.message(), Message::PutReady { .. }),
        "{}",
        g.describe()
    );
    let mut frames = Vec::new();
    for chunk in file.chunks(p.max_chunk as usize) {
        frames.push(p.frame(1, Message::Data, chunk));
    }
    let digest: [u8; 32] = Sha256::digest(file).into();
    let done = Message::Done {
        bytes: file.len() as u64,
        sha256: Some(digest),
    };
    frames.push(p.frame(1, done, &[]));
    frames
}

/// The device answers INTEGRITY (sealed, verified) and closes.
fn integrity_error(p: &mut Peer<'_>) {
    assert_eq!(error_frame(p), (0, ErrorCode::INTEGRITY));
    p.expect_closed().expect("the connection stayed open");
}

fn send_all(p: &mut Peer<'_>, frames: &[Vec<u8>]) {
    for f in frames {
        p.send(f).unwrap();
    }
}

#[test]
fn tampered_sealed_frames_end_the_session_without_effect() {
    let mut n = keyed_net(256 * 1024);
    let file = data(5000, 11);
    {
        // Replay: the first copy is served, the second refused.
        let mut p = peer(&mut n, Some(KEY));
        let ping = p.frame(1, Message::Ping { stamp: 1 }, &[]);
        p.send(&ping).unwrap();
        p.send(&ping).unwrap();
        let g = p.recv_checked().unwrap();
        assert!(
            matches!(g.message(), Message::Pong { stamp: 1 }),
            "{}",
            g.describe()
        );
        integrity_error(&mut p);
    }
    {
        // Reordered: the later frame first is refused; the command never runs.
        let mut p = peer(&mut n, Some(KEY));
        let mut b = [0u8; 16];
        let argv = Argv::join(&["led", "on"], &mut b).unwrap();
        let exec = Message::Exec(tether_proto::Exec {
            command: Command::Argv(argv),
            timeout_ms: None,
        });
        let first = p.frame(1, exec, &[]);
        let second = p.frame(2, Message::Ping { stamp: 2 }, &[]);
        p.send(&second).unwrap();
        p.send(&first).unwrap();
        integrity_error(&mut p);
    }
    assert!(n.device.led_log.is_empty(), "a reordered command ran");
    {
        // One flipped body bit in upload data: not committed.
        let mut p = peer(&mut n, Some(KEY));
        let mut frames = sealed_put_frames(&mut p, "flip.bin", &file);
        frames[2][40] ^= 0x01;
        send_all(&mut p, &frames);
        integrity_error(&mut p);
    }
    {
        // The good data and digest, but Done's tag altered: not committed.
        let mut p = peer(&mut n, Some(KEY));
        let mut frames = sealed_put_frames(&mut p, "done.bin", &file);
        let last = frames.last_mut().unwrap();
        let k = last.len() - 3;
        last[k] ^= 0x80;
        send_all(&mut p, &frames);
        integrity_error(&mut p);
    }
    {
        // A Data frame dropped (the rest spliced together): refused.
        let mut p = peer(&mut n, Some(KEY));
        let mut frames = sealed_put_frames(&mut p, "drop.bin", &file);
        frames.remove(1);
        send_all(&mut p, &frames);
        integrity_error(&mut p);
    }
    {
        // An unsealed frame after Auth: refused.
        let mut p = peer(&mut n, Some(KEY));
        p.send(&frame(Header::new(1, Message::Ping { stamp: 1 }), &[]))
            .unwrap();
        integrity_error(&mut p);
    }
    {
        // The connection cut in the middle of the last frame: not committed.
        let mut p = peer(&mut n, Some(KEY));
        let frames = sealed_put_frames(&mut p, "cut.bin", &file);
        let (last, rest) = frames.split_last().unwrap();
        send_all(&mut p, rest);
        p.send(&last[..last.len() - 5]).unwrap();
    }
    // Nothing was committed; only the upload cut by a closed connection is
    // kept (for resuming: tampered ones are dropped); a well-behaved client
    // is served.
    let mut mem = arena();
    let mut c = connect_keyed(&mut n, &mut mem);
    for name in ["flip.bin", "done.bin", "drop.bin", "cut.bin"] {
        assert_eq!(
            refused(&mut c, |c| c.stat(name)).0,
            ErrorCode::NOT_FOUND,
            "{name}"
        );
    }
    let mem = String::from_utf8(exec(&mut c, &["mem"]).unwrap().stdout).unwrap();
    assert!(
        mem.contains("0 of 32 files, 0 upload(s) in progress, 1 kept"),
        "{mem}"
    );
    put(&mut c, "good.bin", &file, false).unwrap();
    assert_eq!(get(&mut c, "good.bin").unwrap(), file);
    drop(c);
    assert_eq!(n.device.dev.stats().integrity_failures, 6);
}

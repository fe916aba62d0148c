//! Client ↔ simulated device over the virtual wire: two smoltcp stacks in
//! memory, a seeded fault injector, a virtual clock. Deterministic, no
//! privileges, no timing assertions.

use sha2::{Digest as _, Sha256};
use tether_proto::codec::Limits;
use tether_proto::handshake::ClientHandshake;
use tether_proto::io::FrameReader;
use tether_proto::message::{EntryKind, Proof};
use tether_proto::wire::{Flags, Prefix, PrefixRepr};
use tether_proto::Caps;
use tether_proto::{encode_frame, ErrorCode, ExitStatus, Header, Message};
use tether_sim::client::{datagram, parse_datagram, Client, ClientError};
use tether_sim::embedded_io;
use tether_sim::smoltcp::time::Duration;
use tether_sim::virt::{VirtualConfig, VirtualNet, VirtualTcp};
use tether_sim::{Key, SimConfig};

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

fn connect(n: &mut VirtualNet) -> Client<VirtualTcp<'_>> {
    let tcp = n.connect().expect("connect over the virtual wire");
    Client::connect(tcp).expect("handshake")
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

fn remote_code<T>(r: Result<T, ClientError>) -> (ErrorCode, String) {
    match r {
        Err(ClientError::Remote { code, message, .. }) => (code, message),
        Err(e) => panic!("expected an Error frame, got {e}"),
        Ok(_) => panic!("expected an Error frame, got success"),
    }
}

fn frame(h: Header<'_>, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 4096 + body.len()];
    let n = encode_frame(&h, body, &mut b).unwrap().len();
    b.truncate(n);
    b
}

fn error_frame(c: &mut Client<VirtualTcp<'_>>) -> (u32, ErrorCode) {
    let r = c.recv().expect("a frame");
    match r.parse().unwrap() {
        Header {
            request_id,
            message: Message::Error { code, .. },
        } => (request_id, code),
        h => panic!("expected Error, got {h:?}"),
    }
}

fn udp(n: &mut VirtualNet, h: Header<'_>) -> Vec<u8> {
    let d = if h.message.kind() == tether_proto::Kind::Exec {
        let mut b = vec![0u8; 256];
        let k = encode_frame(&h, &[], &mut b).unwrap().len();
        b.truncate(k);
        b
    } else {
        datagram(&h)
    };
    let r = n.udp_request(&d, 0).expect("a datagram reply");
    parse_datagram(&r).expect("the reply is one whole frame")
}

#[test]
fn every_message_kind() {
    let mut n = net(0, 0, 256 * 1024);
    {
        let mut c = connect(&mut n);
        // Hello / HelloAck: the device's limits.
        assert_eq!((c.max_header, c.max_chunk), (512, 1024));
        assert!(c.agent.starts_with("tether-sim/"));
        // Ping / Pong, Echo / EchoReply, Time / TimeReply over TCP.
        assert_eq!(c.ping(42).unwrap(), 42);
        assert_eq!(c.echo("Hello, device").unwrap(), "HELLO, DEVICE");
        let (ms, text) = c.time("%Y-%m-%d").unwrap();
        assert!(ms >= 1_795_305_600_000);
        assert_eq!(text, "2026-11-22");
        // Exec / Output / Exit.
        let out = c.exec(&["help"]).unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        for cmd in [
            "help", "echo", "uptime", "mem", "stats", "led", "reboot", "sha256", "cat",
        ] {
            assert!(help.contains(cmd), "help lacks {cmd}:\n{help}");
        }
        let out = c.exec_line("led on").unwrap();
        assert_eq!(
            (out.stdout, out.status),
            (b"led on\n".to_vec(), ExitStatus::Code(0))
        );
        let out = c.exec(&["led", "sideways"]).unwrap();
        assert_eq!(out.status, ExitStatus::Code(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage: led"));
        let (code, m) = remote_code(c.exec(&["format", "c:"]));
        assert_eq!(code, ErrorCode::EXEC_FAILED);
        assert!(m.contains("format"), "{m}");
        // Put / PutReady / Data / Done, Get / FileInfo / Data / Done.
        let file = data(10_000, 1);
        let digest: [u8; 32] = Sha256::digest(&file).into();
        assert_eq!(c.put("./notes.bin", &file, false).unwrap(), digest);
        assert_eq!(c.get("notes.bin").unwrap(), file);
        let out = c.exec(&["sha256", "notes.bin"]).unwrap();
        assert!(String::from_utf8(out.stdout)
            .unwrap()
            .starts_with(&hex(&digest)));
        c.put("hello.txt", b"hi there\n", false).unwrap();
        assert_eq!(c.exec(&["cat", "hello.txt"]).unwrap().stdout, b"hi there\n");
        // Stat / StatReply, List / ListEntry / Done.
        let e = c.stat("notes.bin").unwrap();
        assert_eq!((e.kind, e.size), (EntryKind::File, 10_000));
        assert_eq!(c.stat("").unwrap().kind, EntryKind::Dir);
        let names: Vec<_> = c
            .list("")
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
        assert_eq!(remote_code(c.stat("hello.txt")).0, ErrorCode::NOT_FOUND);
        assert_eq!(
            remote_code(c.put("notes.bin", b"x", false)).0,
            ErrorCode::EXISTS
        );
        // Cancel: a download stops between chunks with Error CANCELLED.
        let big = data(200_000, 2);
        c.put("big.bin", &big, false).unwrap();
        let id = c.id();
        c.send(
            &Header::new(
                id,
                Message::Get {
                    path: "big.bin",
                    offset: 0,
                },
            ),
            &[],
        )
        .unwrap();
        let first = c.expect(id).unwrap();
        assert!(matches!(
            first.parse().unwrap().message,
            Message::FileInfo { size: 200_000, .. }
        ));
        let cancel_id = c.id();
        c.send(&Header::new(cancel_id, Message::Cancel { target: id }), &[])
            .unwrap();
        let mut got = 0;
        let end = loop {
            let r = c.recv().unwrap();
            match r.parse().unwrap().message {
                Message::Data => got += r.body.len(),
                m => break format!("{:?}", m.kind()),
            }
        };
        assert!(got < 200_000, "the whole file came despite the Cancel");
        assert_eq!(end, "Error");
        // Auth is refused: this device offers no authentication.
        c.send(&Header::new(0, Message::Auth(Proof { mac: [0; 32] })), &[])
            .unwrap();
        assert_eq!(error_frame(&mut c).1, ErrorCode::UNEXPECTED);
        assert_eq!(c.ping(7).unwrap(), 7);
    }
    assert_eq!(n.device.led_log, [true]);
    // UDP: Ping, Echo, Time; anything else is UNEXPECTED.
    let h = udp(&mut n, Header::new(1, Message::Ping { stamp: 9 }));
    assert_eq!(
        Header::parse(&h).unwrap().message,
        Message::Pong { stamp: 9 }
    );
    let h = udp(&mut n, Header::new(2, Message::Echo { text: "udp" }));
    assert_eq!(
        Header::parse(&h).unwrap().message,
        Message::EchoReply { text: "UDP" }
    );
    let h = udp(&mut n, Header::new(3, Message::Time { format: "%s" }));
    assert!(matches!(
        Header::parse(&h).unwrap().message,
        Message::TimeReply { .. }
    ));
    let h = udp(&mut n, Header::new(4, Message::Stat { path: "x" }));
    assert!(matches!(
        Header::parse(&h).unwrap().message,
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
        let mut c = connect(&mut n);
        assert_eq!(c.exec(&["reboot"]).unwrap().stdout, b"rebooting\n");
        assert!(c.ping(1).is_err(), "the connection survived a reboot");
    }
    assert_eq!(n.device.reboots, 1);
    assert_eq!(n.device.led_log, [true, false]);
    let mut c = connect(&mut n);
    let stats = String::from_utf8(c.exec(&["stats"]).unwrap().stdout).unwrap();
    assert!(stats.contains("connections: 1\n"), "{stats}");
    assert_eq!(c.get("notes.bin").unwrap(), data(10_000, 1));
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
            let mut c = connect(&mut n);
            assert_eq!(c.put("big.bin", &file, false).unwrap(), digest);
            let back = c.get("big.bin").unwrap();
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
        let mut c = connect(&mut n);
        // A header of an unknown kind, checksum valid: Error with its id, and on.
        let mut f = frame(Header::new(77, Message::Ping { stamp: 1 }), &[]);
        f[19] = 200;
        let hl = usize::from(f[4]);
        let repr = PrefixRepr {
            version: 1,
            flags: Flags::empty(),
            header_len: hl as u16,
            body_len: 0,
        };
        let (p, h) = f.split_at_mut(18);
        repr.emit(&mut Prefix::new_unchecked(p), &h[..hl]);
        c.send_raw(&f).unwrap();
        assert_eq!(error_frame(&mut c), (77, ErrorCode::UNKNOWN_KIND));
        // A body where none belongs.
        c.send(&Header::new(78, Message::Ping { stamp: 2 }), b"junk")
            .unwrap();
        assert_eq!(error_frame(&mut c), (78, ErrorCode::UNEXPECTED));
        // An upload whose digest is wrong is not committed.
        let id = c.id();
        c.send(
            &Header::new(
                id,
                Message::Put {
                    path: "bad",
                    size: 3,
                    force: false,
                    resume: false,
                },
            ),
            &[],
        )
        .unwrap();
        assert!(matches!(
            c.expect(id).unwrap().parse().unwrap().message,
            Message::PutReady { .. }
        ));
        c.send(&Header::new(id, Message::Data), b"abc").unwrap();
        c.send(
            &Header::new(
                id,
                Message::Done {
                    bytes: 3,
                    sha256: Some([1; 32]),
                },
            ),
            &[],
        )
        .unwrap();
        assert_eq!(error_frame(&mut c), (id, ErrorCode::DIGEST_MISMATCH));
        assert_eq!(remote_code(c.stat("bad")).0, ErrorCode::NOT_FOUND);
        assert_eq!(c.ping(3).unwrap(), 3);
        // Garbage: Error BAD_FRAME (id 0), then the device closes.
        c.send_raw(b"\x00\x01garbage that is not a frame").unwrap();
        assert_eq!(error_frame(&mut c), (0, ErrorCode::BAD_FRAME));
        assert!(
            c.recv().is_err(),
            "the connection stayed open after garbage"
        );
    }
    {
        // A body over the negotiated chunk: BODY_TOO_LARGE, closed.
        let mut c = connect(&mut n);
        c.send(&Header::new(5, Message::Data), &[0; 1025]).unwrap();
        assert_eq!(error_frame(&mut c), (0, ErrorCode::BODY_TOO_LARGE));
        assert!(c.recv().is_err());
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
    let h = parse_datagram(&r).unwrap();
    assert!(matches!(
        Header::parse(&h).unwrap().message,
        Message::Error {
            code: ErrorCode::BAD_FRAME,
            ..
        }
    ));
    let mut d = datagram(&Header::new(1, Message::Ping { stamp: 1 }));
    d.pop();
    let h = parse_datagram(&n.udp_request(&d, 0).unwrap()).unwrap();
    assert!(matches!(
        Header::parse(&h).unwrap().message,
        Message::Error {
            code: ErrorCode::BAD_FRAME,
            ..
        }
    ));
    let fmt = "%Y".repeat(100);
    let h = udp(&mut n, Header::new(2, Message::Time { format: &fmt }));
    assert!(matches!(
        Header::parse(&h).unwrap().message,
        Message::Error {
            code: ErrorCode::TOO_LARGE,
            ..
        }
    ));
    // And the device still serves.
    let mut c = connect(&mut n);
    assert_eq!(c.ping(9).unwrap(), 9);
    let bad = n_bad_frames(&mut c);
    assert!(bad >= 4, "{bad}");
}

fn n_bad_frames(c: &mut Client<VirtualTcp<'_>>) -> u64 {
    let s = String::from_utf8(c.exec(&["stats"]).unwrap().stdout).unwrap();
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
    let mut c = connect(&mut n);
    c.put("a.bin", &data(40 * 1024, 4), false).unwrap();
    let (code, m) = remote_code(c.put("b.bin", &data(40 * 1024, 5), false));
    assert_eq!(code, ErrorCode::NO_SPACE);
    assert_eq!(m, "not enough space: 40960 bytes needed, 24576 free");
    // Replacing needs room for both copies until the commit.
    let (code, _) = remote_code(c.put("a.bin", &data(30 * 1024, 6), true));
    assert_eq!(code, ErrorCode::NO_SPACE);
    // Nothing half-written is left behind, the old file is intact.
    let mem = String::from_utf8(c.exec(&["mem"]).unwrap().stdout).unwrap();
    assert!(
        mem.contains("store: 40960 of 65536 B used, 1 of 32 files, 0 upload(s)"),
        "{mem}"
    );
    assert_eq!(c.get("a.bin").unwrap(), data(40 * 1024, 4));
    c.remove("a.bin").unwrap();
    c.put("b.bin", &data(40 * 1024, 5), false).unwrap();
    // File slots run out too.
    for i in 0..31 {
        c.put(&format!("f{i}"), b"x", false).unwrap();
    }
    let (code, m) = remote_code(c.put("one-too-many", b"x", false));
    assert_eq!(code, ErrorCode::NO_SPACE);
    assert_eq!(m, "store full: all 32 file slots in use");
    // A name over the store's limit.
    let (code, m) = remote_code(c.put(&"n".repeat(49), b"x", true));
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

fn connect_keyed(n: &mut VirtualNet) -> Client<VirtualTcp<'_>> {
    let tcp = n.connect().expect("connect over the virtual wire");
    Client::connect_with_key(tcp, Some(KEY)).expect("authenticated handshake")
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
        let mut c = connect_keyed(&mut n);
        assert!(c.is_sealed());
        assert!(c.caps.contains(Caps::AUTH_PSK.union(Caps::SEAL)));
        assert_eq!(c.ping(5).unwrap(), 5);
        assert_eq!(c.echo("sealed").unwrap(), "SEALED");
        let out = c.exec(&["led", "on"]).unwrap();
        assert_eq!(out.status, ExitStatus::Code(0));
        let file = data(64 * 1024, 9);
        let digest: [u8; 32] = Sha256::digest(&file).into();
        assert_eq!(c.put("sealed.bin", &file, false).unwrap(), digest);
        assert!(
            c.get("sealed.bin").unwrap() == file,
            "64 KiB came back different"
        );
        assert_eq!(c.list("").unwrap().len(), 1);
        let out = c.exec(&["sha256", "sealed.bin"]).unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(&hex(&digest)));
        // Exact one-chunk and empty files.
        let one = data(1024, 10);
        c.put("one.bin", &one, false).unwrap();
        assert_eq!(c.get("one.bin").unwrap(), one);
        c.put("empty", b"", false).unwrap();
        assert_eq!(c.get("empty").unwrap(), b"");
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
    let tcp = n.connect().unwrap();
    let (code, m) = remote_code(Client::connect(tcp));
    assert_eq!(code, ErrorCode::AUTH_REQUIRED);
    assert!(m.contains("pre-shared key"), "{m}");
    // A keyed client refuses an unkeyed device (no downgrade).
    let mut open = net(0, 0, 64 * 1024);
    let tcp = open.connect().unwrap();
    assert!(matches!(
        Client::connect_with_key(tcp, Some(KEY)),
        Err(ClientError::Handshake(_))
    ));
    // Wrong key.
    let tcp = n.connect().unwrap();
    let (code, m) = remote_code(Client::connect_with_key(tcp, Some([0x55; 32])));
    assert_eq!(code, ErrorCode::AUTH_FAILED);
    assert!(m.contains("refused for 1 s"), "{m}");
    // The same address is held back for a second, even with the right key...
    let tcp = n.connect().unwrap();
    let (code, m) = remote_code(Client::connect_with_key(tcp, Some(KEY)));
    assert_eq!(code, ErrorCode::BUSY);
    assert!(m.contains("192.168.69.100"), "{m}");
    // ...then served.
    n.advance(Duration::from_secs(1));
    let mut c = connect_keyed(&mut n);
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
        let argv = tether_proto::Argv::join(&["led", "on"], &mut b).unwrap();
        let exec = Message::Exec(tether_proto::Exec {
            command: tether_proto::Command::Argv(argv),
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
    let mut c = connect_keyed(&mut n);
    assert_eq!(c.ping(2).unwrap(), 2);
    drop(c);
    assert_eq!(n.device.dev.stats().timeouts, 2);
}

/// An upload of `file` to `name` whose frames pass through `tamper`
/// (index, frame bytes) before being sent; returns the client.
fn sealed_put_frames(
    c: &mut Client<VirtualTcp<'_>>,
    name: &str,
    file: &[u8],
) -> (u32, Vec<Vec<u8>>) {
    let id = c.id();
    let put = Message::Put {
        path: name,
        size: file.len() as u64,
        force: true,
        resume: false,
    };
    c.send(&Header::new(id, put), &[]).unwrap();
    assert!(matches!(
        c.expect(id).unwrap().parse().unwrap().message,
        Message::PutReady { .. }
    ));
    let mut frames = Vec::new();
    for chunk in file.chunks(c.max_chunk as usize) {
        frames.push(
            c.seal_frame(&Header::new(id, Message::Data), chunk)
                .unwrap(),
        );
    }
    let digest: [u8; 32] = Sha256::digest(file).into();
    let done = Message::Done {
        bytes: file.len() as u64,
        sha256: Some(digest),
    };
    frames.push(c.seal_frame(&Header::new(id, done), &[]).unwrap());
    (id, frames)
}

fn integrity_error(c: &mut Client<VirtualTcp<'_>>) {
    assert_eq!(error_frame(c), (0, ErrorCode::INTEGRITY));
    assert!(c.recv().is_err(), "the connection stayed open");
}

#[test]
fn tampered_sealed_frames_end_the_session_without_effect() {
    let mut n = keyed_net(256 * 1024);
    let file = data(5000, 11);
    {
        // Replay: the first copy is served, the second refused.
        let mut c = connect_keyed(&mut n);
        let ping = c
            .seal_frame(&Header::new(1, Message::Ping { stamp: 1 }), &[])
            .unwrap();
        c.send_raw(&ping).unwrap();
        c.send_raw(&ping).unwrap();
        assert!(matches!(
            c.recv().unwrap().parse().unwrap().message,
            Message::Pong { stamp: 1 }
        ));
        integrity_error(&mut c);
    }
    {
        // Reordered: the later frame first is refused; the command never runs.
        let mut c = connect_keyed(&mut n);
        let mut b = [0u8; 16];
        let argv = tether_proto::Argv::join(&["led", "on"], &mut b).unwrap();
        let exec = Message::Exec(tether_proto::Exec {
            command: tether_proto::Command::Argv(argv),
            timeout_ms: None,
        });
        let first = c.seal_frame(&Header::new(1, exec), &[]).unwrap();
        let second = c
            .seal_frame(&Header::new(2, Message::Ping { stamp: 2 }), &[])
            .unwrap();
        c.send_raw(&second).unwrap();
        c.send_raw(&first).unwrap();
        integrity_error(&mut c);
    }
    assert!(n.device.led_log.is_empty(), "a reordered command ran");
    {
        // One flipped body bit in upload data: not committed.
        let mut c = connect_keyed(&mut n);
        let (_, mut frames) = sealed_put_frames(&mut c, "flip.bin", &file);
        frames[2][40] ^= 0x01;
        for f in &frames {
            c.send_raw(f).unwrap();
        }
        integrity_error(&mut c);
    }
    {
        // The good data and digest, but Done's tag altered: not committed.
        let mut c = connect_keyed(&mut n);
        let (_, mut frames) = sealed_put_frames(&mut c, "done.bin", &file);
        let last = frames.last_mut().unwrap();
        let k = last.len() - 3;
        last[k] ^= 0x80;
        for f in &frames {
            c.send_raw(f).unwrap();
        }
        integrity_error(&mut c);
    }
    {
        // A Data frame dropped (the rest spliced together): refused.
        let mut c = connect_keyed(&mut n);
        let (_, mut frames) = sealed_put_frames(&mut c, "drop.bin", &file);
        frames.remove(1);
        for f in &frames {
            c.send_raw(f).unwrap();
        }
        integrity_error(&mut c);
    }
    {
        // An unsealed frame after Auth: refused.
        let mut c = connect_keyed(&mut n);
        c.send_raw(&frame(Header::new(1, Message::Ping { stamp: 1 }), &[]))
            .unwrap();
        integrity_error(&mut c);
    }
    {
        // The connection cut in the middle of the last frame: not committed.
        let mut c = connect_keyed(&mut n);
        let (_, frames) = sealed_put_frames(&mut c, "cut.bin", &file);
        let (last, rest) = frames.split_last().unwrap();
        for f in rest {
            c.send_raw(f).unwrap();
        }
        c.send_raw(&last[..last.len() - 5]).unwrap();
    }
    // Nothing was committed; only the upload cut by a closed connection is
    // kept (for resuming: tampered ones are dropped); a well-behaved client
    // is served.
    let mut c = connect_keyed(&mut n);
    for name in ["flip.bin", "done.bin", "drop.bin", "cut.bin"] {
        assert_eq!(remote_code(c.stat(name)).0, ErrorCode::NOT_FOUND, "{name}");
    }
    let mem = String::from_utf8(c.exec(&["mem"]).unwrap().stdout).unwrap();
    assert!(
        mem.contains("0 of 32 files, 0 upload(s) in progress, 1 kept"),
        "{mem}"
    );
    c.put("good.bin", &file, false).unwrap();
    assert_eq!(c.get("good.bin").unwrap(), file);
    drop(c);
    assert_eq!(n.device.dev.stats().integrity_failures, 6);
}

//! DeviceConn, datagram and command tests: bytes in, bytes out, no network.

extern crate std;

use std::string::String;
use std::vec;
use std::vec::Vec;

use sha2::{Digest as _, Sha256};

use super::commands::{Cmd, Ctx, Output, Table};
use super::*;
use crate::codec::{encode_frame, encode_head, Decoder, Event as DecEvent, Limits};
use crate::handshake::{ClientHandshake, Opener, SessionKeys};
use crate::message::{
    Argv, Caps, Command, ErrorCode, Exec, ExitStatus, Header, Hello, Message, Proof,
};
use crate::wire::{Flags, PREFIX_LEN, TAG_LEN};

const NOW_UNIX: u64 = 1_795_355_107_000; // 2026-11-22T13:45:07Z

fn greet(_: &mut u32, _: &mut Ctx<'_>, args: &[&str], out: &mut Output<'_>) -> i32 {
    use core::fmt::Write;
    let _ = writeln!(out, "hi {}", args.get(1).unwrap_or(&"there"));
    let _ = write!(out.err(), "warned");
    3
}

fn flood(_: &mut u32, _: &mut Ctx<'_>, _: &[&str], out: &mut Output<'_>) -> i32 {
    for _ in 0..1000 {
        out.write(false, b"0123456789");
    }
    0
}

static CMDS: [Cmd<u32>; 2] = [
    Cmd {
        name: "greet",
        usage: "greet [NAME]  say hello",
        run: greet,
    },
    Cmd {
        name: "flood",
        usage: "flood  too much output",
        run: flood,
    },
];

type Dev = Device<RamStore<Vec<u8>, 4>, OffsetClock, Table<'static, u32>>;

struct T {
    dev: Dev,
    s: DeviceConn<Vec<u8>>,
    now: u64,
    /// Bytes the session produced and the test has not decoded yet.
    out: Vec<u8>,
    /// Largest poll_transmit buffer offered at a time.
    tx_step: usize,
    /// Largest input slice offered at a time.
    rx_step: usize,
    /// The client's sealing keys once authenticated: the helpers seal what
    /// they send, and `recv` checks every frame's tag.
    keys: Option<SessionKeys>,
}

type Frames = Vec<(Vec<u8>, Vec<u8>)>;

fn enc(h: Header<'_>, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 64 + 1024 + body.len()];
    let n = encode_frame(&h, body, &mut b).unwrap().len();
    b.truncate(n);
    b
}

fn hello_frame(version: u8) -> Vec<u8> {
    enc(
        Header::new(
            0,
            Message::Hello(Hello {
                version,
                max_header: 8192,
                max_chunk: 256 * 1024,
                caps: Caps::empty(),
                nonce: [1; 16],
                agent: "test/0",
            }),
        ),
        &[],
    )
}

/// Seal one frame with `keys` (the client's sending direction).
fn seal(keys: &mut SessionKeys, h: Header<'_>, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 64 + 1024];
    let n = encode_head(&h, body.len() as u64, Flags::SEALED, &mut b)
        .unwrap()
        .len();
    b.truncate(n);
    let mut tag = keys.seal.begin(&b);
    tag.update(body);
    b.extend_from_slice(body);
    b.extend_from_slice(&tag.finish());
    b
}

const KEY: [u8; 32] = [0x42; 32];
const PEER: Peer = Peer::ipv4([192, 168, 69, 100]);

impl T {
    fn new(store_bytes: usize) -> T {
        T::with_config(store_bytes, Config::DEFAULT)
    }

    /// A device with `key`, before Hello.
    fn keyed(store_bytes: usize, key: [u8; 32]) -> T {
        T::with_config(
            store_bytes,
            Config {
                key: Some(key),
                ..Config::DEFAULT
            },
        )
    }

    /// Hello → HelloAck → Auth with `key`; returns the reply to Auth.
    fn authenticate(&mut self, key: Option<[u8; 32]>) -> Frames {
        let mut hs = ClientHandshake::new(key, [1; 16], 8192, 256 * 1024, Caps::empty(), "t/0");
        self.send(&enc(
            Header::new(0, Message::Hello(hs.hello().clone())),
            &[],
        ));
        let f = self.recv();
        let Message::HelloAck(ack) = head(&f[0]).message else {
            return f;
        };
        assert!(ack.caps.contains(Caps::AUTH_PSK.union(Caps::SEAL)));
        let proof = hs.handle_hello_ack(&ack).unwrap().unwrap();
        let f = self.request(Header::new(0, Message::Auth(proof)));
        if let Message::AuthOk(p) = head(&f[0]).message {
            assert_eq!(f.len(), 1);
            self.keys = Some(hs.handle_auth_ok(&p).expect("the device proves the key"));
        }
        f
    }

    /// A keyed device and a client that authenticated with the same key.
    fn authed(store_bytes: usize) -> T {
        let mut t = T::keyed(store_bytes, KEY);
        let f = t.authenticate(Some(KEY));
        assert!(matches!(head(&f[0]).message, Message::AuthOk(_)), "{f:?}");
        assert!(t.s.is_authenticated());
        t
    }

    /// One frame as this client sends it (sealed once authenticated).
    fn frame(&mut self, h: Header<'_>, body: &[u8]) -> Vec<u8> {
        match self.keys.as_mut() {
            Some(k) => seal(k, h, body),
            None => enc(h, body),
        }
    }

    /// A new connection on the same device, from `peer`, at the current time.
    fn reconnect(&mut self, peer: Peer) {
        self.s.handle_close(&mut self.dev);
        self.s
            .handle_accept(&mut self.dev, peer, [self.now as u8; 16], self.now);
        self.keys = None;
        self.out.clear();
    }

    fn with_config(store_bytes: usize, config: Config) -> T {
        let table = Table {
            state: 0u32,
            commands: &CMDS,
        };
        let mut dev = Device::new(
            config,
            RamStore::new(vec![0; store_bytes]),
            OffsetClock {
                offset_ms: NOW_UNIX,
            },
            table,
            0,
        );
        let mut s = DeviceConn::new(vec![0; 512], vec![0; 640], vec![0; 512]);
        s.handle_accept(&mut dev, PEER, [9; 16], 0);
        T {
            dev,
            s,
            now: 0,
            out: Vec::new(),
            tx_step: 4096,
            rx_step: 1 << 20,
            keys: None,
        }
    }

    /// A session past Hello.
    fn open(store_bytes: usize) -> T {
        let mut t = T::new(store_bytes);
        t.send(&hello_frame(1));
        let f = t.recv();
        assert_eq!(f.len(), 1);
        assert!(matches!(head(&f[0]).message, Message::HelloAck(_)));
        t
    }

    fn drain(&mut self) -> bool {
        let mut buf = vec![0u8; self.tx_step];
        let n = self.s.poll_transmit(&mut self.dev, &mut buf, self.now);
        self.out.extend_from_slice(&buf[..n]);
        n > 0
    }

    /// Feed everything, draining output whenever the session pushes back.
    fn send(&mut self, mut bytes: &[u8]) {
        let mut stalls = 0;
        while !bytes.is_empty() {
            let step = bytes.len().min(self.rx_step);
            let n = self.s.handle_bytes(&mut self.dev, &bytes[..step], self.now);
            bytes = &bytes[n..];
            if n < step {
                assert!(self.drain() || n > 0, "session neither reads nor writes");
                stalls += 1;
                assert!(stalls < 1_000_000);
            }
        }
    }

    /// Everything the session has to say, decoded.
    fn recv(&mut self) -> Frames {
        while self.drain() {}
        let mut hb = [0u8; 1024];
        let mut d = Decoder::new(
            &mut hb[..],
            Limits {
                max_header: 1024,
                max_body: 1 << 20,
            },
        );
        let mut frames = Vec::new();
        let mut cur: Option<(Vec<u8>, Vec<u8>)> = None;
        let mut input = &self.out[..];
        let mut tag = None;
        loop {
            let (n, r) = d.handle_bytes(input);
            input = &input[n..];
            match r.expect("the device sent an undecodable stream") {
                Some(DecEvent::Header(f)) => {
                    if let Some(k) = self.keys.as_mut() {
                        assert!(f.prefix.flags.contains(Flags::SEALED), "unsealed reply");
                        tag = Some(k.open.begin_frame(&f));
                    }
                    cur = Some((f.header.to_vec(), Vec::new()))
                }
                Some(DecEvent::Body(b)) => {
                    if let Some(t) = tag.as_mut() {
                        t.update(b);
                    }
                    cur.as_mut().unwrap().1.extend_from_slice(b)
                }
                Some(DecEvent::End { tag: got }) => {
                    if let Some(t) = tag.take() {
                        assert!(Opener::verify(t, &got.unwrap()), "reply tag fails");
                    }
                    frames.push(cur.take().unwrap())
                }
                None => break,
            }
        }
        assert!(cur.is_none() && d.is_idle(), "a partial frame was left");
        self.out.clear();
        frames
    }

    fn request(&mut self, h: Header<'_>) -> Frames {
        let f = self.frame(h, &[]);
        self.send(&f);
        self.recv()
    }

    fn exec(&mut self, id: u32, args: &[&str]) -> (String, String, ExitStatus) {
        let mut b = [0u8; 256];
        let argv = Argv::join(args, &mut b).unwrap();
        let f = self.request(Header::new(
            id,
            Message::Exec(Exec {
                command: Command::Argv(argv),
                timeout_ms: None,
            }),
        ));
        exec_result(id, &f)
    }

    fn put(&mut self, id: u32, name: &str, data: &[u8], force: bool) -> Frames {
        let f = self.request(Header::new(
            id,
            Message::Put {
                path: name,
                size: data.len() as u64,
                force,
                resume: false,
            },
        ));
        if !matches!(head(&f[0]).message, Message::PutReady { offset: 0, .. }) {
            return f;
        }
        let mut stream = Vec::new();
        for c in data.chunks(1000) {
            let f = self.frame(Header::new(id, Message::Data), c);
            stream.extend(f);
        }
        let digest: [u8; 32] = Sha256::digest(data).into();
        let done = self.frame(
            Header::new(
                id,
                Message::Done {
                    bytes: data.len() as u64,
                    sha256: Some(digest),
                },
            ),
            &[],
        );
        stream.extend(done);
        self.send(&stream);
        self.recv()
    }

    fn get(&mut self, id: u32, name: &str) -> Vec<u8> {
        let f = self.request(Header::new(
            id,
            Message::Get {
                path: name,
                offset: 0,
            },
        ));
        let Message::FileInfo { size, .. } = head(&f[0]).message else {
            panic!("{:?}", head(&f[0]))
        };
        let mut data = Vec::new();
        for fr in &f[1..f.len() - 1] {
            let h = head(fr);
            assert_eq!((h.request_id, h.message), (id, Message::Data));
            assert!(fr.1.len() <= 1024);
            data.extend_from_slice(&fr.1);
        }
        let digest: [u8; 32] = Sha256::digest(&data).into();
        assert_eq!(
            head(f.last().unwrap()).message,
            Message::Done {
                bytes: size,
                sha256: Some(digest)
            }
        );
        data
    }
}

fn head(f: &(Vec<u8>, Vec<u8>)) -> Header<'_> {
    Header::parse(&f.0).unwrap()
}

fn error_of(f: &(Vec<u8>, Vec<u8>)) -> (u32, ErrorCode, String) {
    match head(f) {
        Header {
            request_id,
            message: Message::Error { code, message },
        } => (request_id, code, message.into()),
        h => panic!("expected an Error, got {h:?}"),
    }
}

fn exec_result(id: u32, f: &Frames) -> (String, String, ExitStatus) {
    let (mut o, mut e) = (String::new(), String::new());
    for fr in &f[..f.len() - 1] {
        let h = head(fr);
        assert_eq!(h.request_id, id);
        match h.message {
            Message::Output { stream } => {
                let s = core::str::from_utf8(&fr.1).unwrap();
                match stream {
                    crate::message::Stream::Stdout => o.push_str(s),
                    crate::message::Stream::Stderr => e.push_str(s),
                }
            }
            m => panic!("expected Output, got {m:?}"),
        }
    }
    match head(f.last().unwrap()).message {
        Message::Exit { status } => (o, e, status),
        m => panic!("expected Exit, got {m:?}: {f:?}"),
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn hello_negotiates_device_limits() {
    let mut t = T::new(1024);
    t.send(&hello_frame(1));
    let f = t.recv();
    let Message::HelloAck(ack) = head(&f[0]).message else {
        panic!()
    };
    assert_eq!((ack.max_header, ack.max_chunk), (512, 1024));
    assert_eq!(ack.nonce, [9; 16]);
    assert!(ack
        .caps
        .contains(Caps::EXEC.union(Caps::FILES).union(Caps::WRITE)));
    assert!(!ack.caps.contains(Caps::AUTH_PSK));
    assert!(!t.s.poll_close());
    assert_eq!(t.dev.stats().connections, 1);
}

#[test]
fn requests_before_hello_or_old_versions_are_refused_and_closed() {
    let mut t = T::new(1024);
    let f = t.request(Header::new(3, Message::Ping { stamp: 1 }));
    assert_eq!(error_of(&f[0]).1, ErrorCode::UNEXPECTED);
    assert!(t.s.poll_close());
    // Whatever follows is ignored.
    assert_eq!(
        t.s.handle_bytes(&mut t.dev, &hello_frame(1), 0),
        hello_frame(1).len()
    );
    assert!(t.recv().is_empty());

    let mut t = T::new(1024);
    t.send(&hello_frame(0));
    let (id, code, _) = error_of(&t.recv()[0]);
    assert_eq!((id, code), (0, ErrorCode::UNSUPPORTED_VERSION));
    assert!(t.s.poll_close());

    // A Hello whose request id is not 0.
    let mut t = T::new(1024);
    let hello = hello_frame(1);
    let mut h = Header::parse(&hello[PREFIX_LEN..]).unwrap();
    h.request_id = 5;
    t.send(&enc(h, &[]));
    let (id, code, m) = error_of(&t.recv()[0]);
    assert_eq!((id, code), (0, ErrorCode::UNEXPECTED));
    assert!(m.contains("request id 0, not 5"), "{m}");
    assert!(t.s.poll_close());
}

#[test]
fn ping_echo_time() {
    let mut t = T::open(1024);
    let f = t.request(Header::new(1, Message::Ping { stamp: 77 }));
    assert_eq!(head(&f[0]), Header::new(1, Message::Pong { stamp: 77 }));
    let f = t.request(Header::new(
        2,
        Message::Echo {
            text: "hello, wörld",
        },
    ));
    assert_eq!(
        head(&f[0]),
        Header::new(
            2,
            Message::EchoReply {
                text: "HELLO, WöRLD"
            }
        )
    );
    t.now = 1500;
    let f = t.request(Header::new(3, Message::Time { format: "" }));
    assert_eq!(
        head(&f[0]).message,
        Message::TimeReply {
            unix_ms: NOW_UNIX + 1500,
            text: "2026-11-22T13:45:08Z"
        }
    );
    let long = "%Y".repeat(100);
    let f = t.request(Header::new(4, Message::Time { format: &long }));
    assert_eq!(error_of(&f[0]).1, ErrorCode::TOO_LARGE);
}

#[test]
fn builtin_and_firmware_commands() {
    let mut t = T::open(4096);
    let (o, _, st) = t.exec(1, &["help"]);
    for c in [
        "help", "echo", "uptime", "mem", "stats", "led", "reboot", "greet",
    ] {
        assert!(o.contains(c), "help lacks {c}: {o}");
    }
    assert_eq!(st, ExitStatus::Code(0));
    assert_eq!(t.exec(2, &["echo", "a", "b c"]).0, "a b c\n");
    let (o, e, st) = t.exec(3, &["greet", "bob"]);
    assert_eq!(
        (o.as_str(), e.as_str(), st),
        ("hi bob\n", "warned", ExitStatus::Code(3))
    );

    assert_eq!(t.dev.poll_event(), None);
    assert_eq!(t.exec(4, &["led", "on"]).0, "led on\n");
    assert_eq!(t.dev.poll_event(), Some(Event::Led(true)));
    assert!(t.dev.led());
    let (_, e, st) = t.exec(5, &["led", "blink"]);
    assert_eq!(
        (e.as_str(), st),
        ("usage: led [on|off|toggle]\n", ExitStatus::Code(2))
    );

    t.now = 90_061_001;
    let o = t.exec(6, &["uptime"]).0;
    assert!(
        o.starts_with("up 1d 01:01:01.001 (90061001 ms), now 2026-11-23T"),
        "{o}"
    );
    let o = t.exec(7, &["mem"]).0;
    assert!(o.contains("header buffer 512 + staging buffer 640"), "{o}");
    assert!(o.contains("store: 0 of 4096 B used"), "{o}");
    let o = t.exec(8, &["stats"]).0;
    assert!(o.contains("connections: 1"), "{o}");

    // Shell lines are split on whitespace.
    let f = t.request(Header::new(
        9,
        Message::Exec(Exec {
            command: Command::Shell("  echo   x  y "),
            timeout_ms: Some(5),
        }),
    ));
    assert_eq!(exec_result(9, &f).0, "x y\n");

    let (o, e, _) = t.exec(10, &["flood"]);
    assert_eq!(o.len(), 384);
    assert!(e.ends_with("[output truncated]\n"));

    let f = t.request(Header::new(
        11,
        Message::Exec(Exec {
            command: Command::Argv(Argv("nope\0x")),
            timeout_ms: None,
        }),
    ));
    let (id, code, m) = error_of(&f[0]);
    assert_eq!((id, code), (11, ErrorCode::EXEC_FAILED));
    assert!(m.contains("nope"), "{m}");
    let f = t.request(Header::new(
        12,
        Message::Exec(Exec {
            command: Command::Shell("   "),
            timeout_ms: None,
        }),
    ));
    assert_eq!(error_of(&f[0]).1, ErrorCode::EXEC_FAILED);
    let many = ["echo"; 17];
    let mut b = [0u8; 256];
    let argv = Argv::join(&many, &mut b).unwrap();
    let f = t.request(Header::new(
        13,
        Message::Exec(Exec {
            command: Command::Argv(argv),
            timeout_ms: None,
        }),
    ));
    assert_eq!(error_of(&f[0]).1, ErrorCode::TOO_LARGE);

    assert_eq!(t.exec(14, &["reboot"]).0, "rebooting\n");
    assert_eq!(t.dev.poll_event(), Some(Event::Reboot));
    t.dev.handle_reboot(t.now);
    assert_eq!(t.dev.poll_event(), Some(Event::Led(false)));
    assert_eq!(t.dev.stats().connections, 0);
    assert_eq!(t.dev.uptime_ms(t.now + 5), 5);
}

#[test]
fn files_round_trip_byte_by_byte() {
    let mut t = T::open(16 * 1024);
    // One byte in and out at a time: the same frames as in bulk.
    t.tx_step = 1;
    t.rx_step = 1;
    let data = pattern(3000);
    let f = t.put(1, "./data.bin", &data, false);
    let digest: [u8; 32] = Sha256::digest(&data).into();
    assert_eq!(
        head(&f[0]).message,
        Message::Done {
            bytes: 3000,
            sha256: Some(digest)
        }
    );
    t.tx_step = 7;
    assert_eq!(t.get(2, "data.bin"), data);
    let f = t.request(Header::new(3, Message::Stat { path: "./data.bin" }));
    let Message::StatReply(e) = head(&f[0]).message else {
        panic!()
    };
    assert_eq!(
        (e.name, e.size, e.modified),
        ("data.bin", 3000, NOW_UNIX / 1000)
    );
    t.put(4, "empty", &[], false);
    let f = t.request(Header::new(5, Message::List { path: "" }));
    let names: Vec<_> = f[..2]
        .iter()
        .map(|fr| match head(fr).message {
            Message::ListEntry(e) => (String::from(e.name), e.size),
            m => panic!("{m:?}"),
        })
        .collect();
    assert_eq!(names, [("data.bin".into(), 3000), ("empty".into(), 0)]);
    assert_eq!(
        head(&f[2]).message,
        Message::Done {
            bytes: 2,
            sha256: None
        }
    );
    assert_eq!(t.get(6, "empty"), b"");
    let f = t.request(Header::new(7, Message::Remove { path: "data.bin" }));
    assert!(matches!(
        head(&f[0]).message,
        Message::Done { bytes: 0, .. }
    ));
    let f = t.request(Header::new(8, Message::Stat { path: "data.bin" }));
    assert_eq!(error_of(&f[0]).1, ErrorCode::NOT_FOUND);
    let f = t.request(Header::new(9, Message::Stat { path: "" }));
    assert!(
        matches!(head(&f[0]).message, Message::StatReply(e) if e.kind == crate::message::EntryKind::Dir)
    );
    for (path, code) in [
        ("a/b", ErrorCode::PATH_REFUSED),
        ("..", ErrorCode::PATH_REFUSED),
        ("/", ErrorCode::PATH_REFUSED),
        (".", ErrorCode::IS_DIRECTORY),
    ] {
        let f = t.request(Header::new(10, Message::Get { path, offset: 0 }));
        assert_eq!(error_of(&f[0]).1, code, "{path}");
    }
    let f = t.request(Header::new(11, Message::List { path: "empty" }));
    assert_eq!(error_of(&f[0]).1, ErrorCode::NOT_DIRECTORY);
}

#[test]
fn get_from_offset_sends_prefix_digest() {
    let mut t = T::open(8192);
    let data = pattern(2500);
    t.put(1, "f", &data, false);
    let f = t.request(Header::new(
        2,
        Message::Get {
            path: "f",
            offset: 1000,
        },
    ));
    let prefix: [u8; 32] = Sha256::digest(&data[..1000]).into();
    assert_eq!(
        head(&f[0]).message,
        Message::FileInfo {
            size: 2500,
            modified: NOW_UNIX / 1000,
            offset: 1000,
            prefix_sha256: Some(prefix)
        }
    );
    let body: Vec<u8> = f[1..f.len() - 1]
        .iter()
        .flat_map(|fr| fr.1.clone())
        .collect();
    assert_eq!(body, &data[1000..]);
    let whole: [u8; 32] = Sha256::digest(&data).into();
    assert_eq!(
        head(f.last().unwrap()).message,
        Message::Done {
            bytes: 2500,
            sha256: Some(whole)
        }
    );
    let f = t.request(Header::new(
        3,
        Message::Get {
            path: "f",
            offset: 2501,
        },
    ));
    assert!(matches!(
        head(&f[0]).message,
        Message::FileInfo {
            offset: 0,
            prefix_sha256: None,
            ..
        }
    ));
    assert_eq!(f.len(), 2 + 3);
}

#[test]
fn uploads_commit_only_when_complete_and_verified() {
    let mut t = T::open(4096);
    let data = pattern(1500);
    // Wrong digest.
    t.request(Header::new(
        1,
        Message::Put {
            path: "x",
            size: 1500,
            force: false,
            resume: false,
        },
    ));
    let mut s = enc(Header::new(1, Message::Data), &data[..1000]);
    s.extend(enc(Header::new(1, Message::Data), &data[1000..]));
    s.extend(enc(
        Header::new(
            1,
            Message::Done {
                bytes: 1500,
                sha256: Some([0; 32]),
            },
        ),
        &[],
    ));
    t.send(&s);
    let (id, code, _) = error_of(&t.recv()[0]);
    assert_eq!((id, code), (1, ErrorCode::DIGEST_MISMATCH));
    assert_eq!(t.dev.store.usage().used, 0);
    assert!(t.dev.store.find("x").is_none());

    // More data than announced.
    t.request(Header::new(
        2,
        Message::Put {
            path: "x",
            size: 10,
            force: false,
            resume: false,
        },
    ));
    t.send(&enc(Header::new(2, Message::Data), &data[..11]));
    // Its late Done is dropped silently.
    t.send(&enc(
        Header::new(
            2,
            Message::Done {
                bytes: 10,
                sha256: None,
            },
        ),
        &[],
    ));
    let f = t.recv();
    assert_eq!(f.len(), 1);
    assert_eq!(error_of(&f[0]).1, ErrorCode::BAD_LENGTH);
    assert_eq!(t.dev.store.usage().used, 0);

    // Done before all the data.
    t.request(Header::new(
        3,
        Message::Put {
            path: "x",
            size: 10,
            force: false,
            resume: false,
        },
    ));
    let f = t.request(Header::new(
        3,
        Message::Done {
            bytes: 10,
            sha256: None,
        },
    ));
    assert_eq!(error_of(&f[0]).1, ErrorCode::BAD_LENGTH);

    // Exists, no space, name too long.
    t.put(4, "x", b"abc", false);
    let f = t.put(5, "x", b"def", false);
    assert_eq!(error_of(&f[0]).1, ErrorCode::EXISTS);
    let f = t.put(6, "x", b"def", true);
    assert!(matches!(
        head(&f[0]).message,
        Message::Done { bytes: 3, .. }
    ));
    assert_eq!(t.get(7, "x"), b"def");
    let f = t.put(8, "big", &pattern(4094), false);
    let (_, code, m) = error_of(&f[0]);
    assert_eq!(code, ErrorCode::NO_SPACE);
    assert_eq!(m, "not enough space: 4094 bytes needed, 4093 free");
    let f = t.put(9, &"n".repeat(49), b"", false);
    let (_, code, m) = error_of(&f[0]);
    assert_eq!(code, ErrorCode::PATH_REFUSED);
    assert!(m.contains("limit of 48 bytes"), "{m}");
    let f = t.put(9, "/abs", b"", false);
    assert_eq!(error_of(&f[0]).1, ErrorCode::PATH_REFUSED);
    // Slots: 4 files at most.
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        t.put(10 + i as u32, n, b"1", false);
    }
    let f = t.put(20, "d", b"1", false);
    let (_, code, m) = error_of(&f[0]);
    assert_eq!(code, ErrorCode::NO_SPACE);
    assert!(m.contains("file slots"), "{m}");
}

#[test]
fn cancel_busy_and_ping_while_streaming() {
    let mut t = T::open(64 * 1024);
    let data = pattern(50_000);
    t.put(1, "big", &data, false);
    t.send(&enc(
        Header::new(
            2,
            Message::Get {
                path: "big",
                offset: 0,
            },
        ),
        &[],
    ));
    // Part of the download goes out.
    let mut buf = vec![0u8; 3000];
    let n = t.s.poll_transmit(&mut t.dev, &mut buf, 0);
    assert_eq!(n, 3000);
    t.out.extend_from_slice(&buf);
    t.send(&enc(Header::new(3, Message::Stat { path: "big" }), &[]));
    t.send(&enc(Header::new(4, Message::Ping { stamp: 5 }), &[]));
    t.send(&enc(Header::new(0, Message::Cancel { target: 2 }), &[]));
    let f = t.recv();
    let kinds: Vec<_> = f
        .iter()
        .map(|fr| (head(fr).request_id, head(fr).message.kind()))
        .collect();
    let data_frames = kinds
        .iter()
        .filter(|k| k.1 == crate::message::Kind::Data)
        .count();
    // 49 frames would be the whole file.
    assert!(data_frames < 20, "{kinds:?}");
    // A second request is served while the Get streams; the Cancel ends it.
    assert!(
        kinds.contains(&(3, crate::message::Kind::StatReply)),
        "{kinds:?}"
    );
    let errs: Vec<_> = f
        .iter()
        .filter(|fr| head(fr).message.kind() == crate::message::Kind::Error)
        .map(error_of)
        .collect();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].0, errs[0].1), (2, ErrorCode::CANCELLED));
    assert!(kinds.contains(&(4, crate::message::Kind::Pong)));
    assert!(!kinds.iter().any(|k| k.1 == crate::message::Kind::Done));
    // The connection goes on.
    let f = t.request(Header::new(5, Message::Ping { stamp: 6 }));
    assert_eq!(head(&f[0]).message, Message::Pong { stamp: 6 });

    // Cancel an upload: discarded.
    t.request(Header::new(
        6,
        Message::Put {
            path: "up",
            size: 100,
            force: false,
            resume: false,
        },
    ));
    t.send(&enc(Header::new(6, Message::Data), &[1; 50]));
    let f = t.request(Header::new(0, Message::Cancel { target: 6 }));
    assert_eq!(error_of(&f[0]).1, ErrorCode::CANCELLED);
    t.send(&enc(Header::new(6, Message::Data), &[1; 50]));
    assert!(
        t.recv().is_empty(),
        "late data of a cancelled upload is dropped"
    );
    assert!(t.dev.store.find("up").is_none());
    assert_eq!(t.dev.store.usage().pending, 1, "kept for resuming");
}

#[test]
fn replies_wait_for_room_and_keep_order() {
    let mut t = T::open(1024);
    let mut s = Vec::new();
    for i in 0..200u64 {
        s.extend(enc(Header::new(i as u32, Message::Ping { stamp: i }), &[]));
    }
    // Without draining, the session stops reading once its tx buffer is full.
    let n = t.s.handle_bytes(&mut t.dev, &s, 0);
    assert!(n < s.len());
    t.send(&s[n..]);
    let f = t.recv();
    assert_eq!(f.len(), 200);
    for (i, fr) in f.iter().enumerate() {
        assert_eq!(
            head(fr),
            Header::new(i as u32, Message::Pong { stamp: i as u64 })
        );
    }
}

#[test]
fn hostile_frames_get_errors() {
    let mut t = T::open(1024);
    // Unknown kind, valid checksum: Error with its id, connection goes on.
    let mut f = enc(Header::new(7, Message::Ping { stamp: 0 }), &[]);
    f[19] = 99;
    let hl = f[4] as usize;
    let repr = crate::wire::PrefixRepr {
        version: 1,
        flags: crate::wire::Flags::empty(),
        header_len: hl as u16,
        body_len: 0,
    };
    let (p, h) = f.split_at_mut(18);
    repr.emit(&mut crate::wire::Prefix::new_unchecked(p), &h[..hl]);
    t.send(&f);
    let (id, code, _) = error_of(&t.recv()[0]);
    assert_eq!((id, code), (7, ErrorCode::UNKNOWN_KIND));
    // A body where none belongs: Error, body skipped.
    t.send(&enc(Header::new(8, Message::Ping { stamp: 1 }), b"junk"));
    assert_eq!(error_of(&t.recv()[0]).1, ErrorCode::UNEXPECTED);
    // Replies sent to the device, Auth, Hello again.
    let f = t.request(Header::new(9, Message::Pong { stamp: 1 }));
    assert_eq!(error_of(&f[0]).1, ErrorCode::UNEXPECTED);
    let f = t.request(Header::new(
        10,
        Message::Auth(crate::message::Proof { mac: [0; 32] }),
    ));
    assert_eq!(error_of(&f[0]).1, ErrorCode::UNEXPECTED);
    t.send(&hello_frame(1));
    assert_eq!(error_of(&t.recv()[0]).1, ErrorCode::UNEXPECTED);
    // Clients do not send Errors (they Cancel).
    let f = t.request(Header::new(
        11,
        Message::Error {
            code: ErrorCode::IO,
            message: "x",
        },
    ));
    assert_eq!(error_of(&f[0]).1, ErrorCode::UNEXPECTED);
    let f = t.request(Header::new(12, Message::Ping { stamp: 2 }));
    assert_eq!(head(&f[0]).message, Message::Pong { stamp: 2 });
    assert!(!t.s.poll_close());

    // A body over the negotiated chunk: fatal.
    let big = enc(Header::new(13, Message::Data), &[0; 1025]);
    t.send(&big);
    let (id, code, _) = error_of(&t.recv()[0]);
    assert_eq!((id, code), (0, ErrorCode::BODY_TOO_LARGE));
    assert!(t.s.poll_close());
    t.s.handle_close(&mut t.dev);
    assert!(!t.s.is_open());

    // Garbage: fatal, BAD_FRAME.
    let mut t = T::open(1024);
    t.send(b"GET / HTTP/1.1\r\n\r\n");
    let (id, code, _) = error_of(&t.recv()[0]);
    assert_eq!((id, code), (0, ErrorCode::BAD_FRAME));
    assert!(t.s.poll_close());
    assert_eq!(t.dev.stats().bad_frames, 1);
}

#[test]
fn more_requests_than_slots_are_busy() {
    let mut t = T::open(200_000);
    t.put(1, "a", &pattern(40_000), false);
    t.put(2, "b", &pattern(40_000), false);
    let get = |id, path| enc(Header::new(id, Message::Get { path, offset: 0 }), &[]);
    t.send(&get(3, "a"));
    t.send(&get(4, "b"));
    let f = t.request(Header::new(5, Message::Stat { path: "a" }));
    let busy: Vec<_> = f
        .iter()
        .filter(|fr| head(fr).request_id == 5)
        .map(error_of)
        .collect();
    assert_eq!(busy.len(), 1);
    assert_eq!(busy[0].1, ErrorCode::BUSY);
    assert!(busy[0].2.contains("max_requests"), "{}", busy[0].2);
    // Both downloads ran to their Done, interleaved.
    let dones = f
        .iter()
        .filter(|fr| matches!(head(fr).message, Message::Done { .. }))
        .count();
    assert_eq!(dones, 2);
}

#[test]
fn closing_mid_upload_keeps_it_and_a_resumed_put_completes_it() {
    let mut t = T::open(1024);
    let data = pattern(100);
    t.request(Header::new(
        1,
        Message::Put {
            path: "p",
            size: 100,
            force: false,
            resume: false,
        },
    ));
    t.send(&enc(Header::new(1, Message::Data), &data[..60]));
    assert_eq!(t.dev.store.usage().pending, 1);
    t.s.handle_close(&mut t.dev);
    assert_eq!(t.dev.store.usage().pending, 1, "kept for resuming");
    assert_eq!(t.dev.store.find("p"), None, "never visible");

    t.reconnect(PEER);
    t.send(&hello_frame(1));
    t.recv();
    let f = t.request(Header::new(
        7,
        Message::Put {
            path: "p",
            size: 100,
            force: false,
            resume: true,
        },
    ));
    let prefix: [u8; 32] = Sha256::digest(&data[..60]).into();
    assert_eq!(
        head(&f[0]).message,
        Message::PutReady {
            offset: 60,
            prefix_sha256: Some(prefix)
        }
    );
    t.send(&enc(Header::new(7, Message::Data), &data[60..]));
    let digest: [u8; 32] = Sha256::digest(&data).into();
    let f = t.request(Header::new(
        7,
        Message::Done {
            bytes: 100,
            sha256: Some(digest),
        },
    ));
    assert_eq!(
        head(&f[0]).message,
        Message::Done {
            bytes: 100,
            sha256: Some(digest)
        }
    );
    assert_eq!(t.get(8, "p"), data);
    assert_eq!(t.dev.store.usage().pending, 0);
}

#[test]
fn a_put_without_resume_drops_the_kept_partial() {
    let mut t = T::open(1024);
    t.request(Header::new(
        1,
        Message::Put {
            path: "p",
            size: 100,
            force: false,
            resume: false,
        },
    ));
    t.send(&enc(Header::new(1, Message::Data), &[1; 60]));
    t.s.handle_close(&mut t.dev);
    t.reconnect(PEER);
    t.send(&hello_frame(1));
    t.recv();
    let data = pattern(80);
    let f = t.put(2, "p", &data, false);
    assert!(
        matches!(head(&f[0]).message, Message::Done { bytes: 80, .. }),
        "{f:?}"
    );
    assert_eq!(t.get(3, "p"), data);
    assert_eq!(t.dev.store.usage().pending, 0);
    assert_eq!(t.dev.store.usage().used, 80);
}

#[test]
fn datagrams() {
    let mut t = T::open(1024);
    let dev = &mut t.dev;
    let mut out = [0u8; 2048];
    let ask = |dev: &mut Dev, d: &[u8], out: &mut [u8]| -> Option<Vec<u8>> {
        let n = dev.handle_datagram(d, 2000, out);
        (n > 0).then(|| out[..n].to_vec())
    };
    let parse = |r: &[u8]| -> (Vec<u8>, usize) {
        let hl = r[4] as usize | (r[5] as usize) << 8;
        assert_eq!(r.len(), 18 + hl);
        (r[18..18 + hl].to_vec(), hl)
    };
    let r = ask(
        dev,
        &enc(Header::new(1, Message::Ping { stamp: 3 }), &[]),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        Header::parse(&parse(&r).0).unwrap(),
        Header::new(1, Message::Pong { stamp: 3 })
    );
    let r = ask(
        dev,
        &enc(Header::new(2, Message::Echo { text: "abc" }), &[]),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        Header::parse(&parse(&r).0).unwrap().message,
        Message::EchoReply { text: "ABC" }
    );
    let r = ask(
        dev,
        &enc(Header::new(3, Message::Time { format: "%s" }), &[]),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        Header::parse(&parse(&r).0).unwrap().message,
        Message::TimeReply {
            unix_ms: NOW_UNIX + 2000,
            text: "1795355109"
        }
    );
    let code = |r: Vec<u8>| match Header::parse(&parse(&r).0).unwrap().message {
        Message::Error { code, .. } => code,
        m => panic!("{m:?}"),
    };
    let r = ask(
        dev,
        &enc(Header::new(4, Message::Stat { path: "x" }), &[]),
        &mut out,
    )
    .unwrap();
    assert_eq!(code(r), ErrorCode::UNEXPECTED);
    let r = ask(dev, b"hello", &mut out).unwrap();
    assert_eq!(code(r), ErrorCode::BAD_FRAME);
    let mut trunc = enc(Header::new(5, Message::Ping { stamp: 3 }), &[]);
    trunc.push(0);
    assert_eq!(
        code(ask(dev, &trunc, &mut out).unwrap()),
        ErrorCode::BAD_FRAME
    );
    let mut bad = enc(Header::new(5, Message::Ping { stamp: 3 }), &[]);
    bad[20] ^= 1;
    assert_eq!(
        code(ask(dev, &bad, &mut out).unwrap()),
        ErrorCode::BAD_FRAME
    );
    // Replies and errors are not answered.
    assert!(ask(
        dev,
        &enc(Header::new(6, Message::Pong { stamp: 3 }), &[]),
        &mut out
    )
    .is_none());
    // An echo whose reply cannot fit the caller's buffer.
    let text = "x".repeat(200);
    let r = ask(
        dev,
        &enc(Header::new(7, Message::Echo { text: &text }), &[]),
        &mut out[..100],
    )
    .unwrap();
    assert_eq!(code(r), ErrorCode::TOO_LARGE);
    assert_eq!(dev.stats().datagrams, 9);
}

#[test]
fn protocol_state_is_small() {
    extern crate std;
    // Beyond socket buffers: the connection's buffers (header 512,
    // staging 640, output 768) plus the connection itself: decoder,
    // handshake or session keys, one HMAC state for the sealed frame being
    // received, and per request slot a SHA-256 state and the request's
    // progress.
    let (mut h, mut tx, mut o) = ([0u8; 512], [0u8; 640], [0u8; 768]);
    let one: DeviceConn<_, 1> = DeviceConn::new(&mut h[..], &mut tx[..], &mut o[..]);
    let total = one.mem().total();
    let slot = core::mem::size_of::<DeviceConn<&mut [u8], 2>>()
        - core::mem::size_of::<DeviceConn<&mut [u8], 1>>();
    std::eprintln!("one connection, one slot: {total} B; each further slot {slot} B");
    assert!(total <= 4096, "{total}");
    assert!(slot <= 256, "{slot}");
}

#[test]
fn exec_output_is_chunked_and_cancel_ends_it() {
    let mut t = T::new(1024);
    // A client that takes 64-byte bodies at most.
    t.send(&enc(
        Header::new(
            0,
            Message::Hello(Hello {
                version: 1,
                max_header: 512,
                max_chunk: 64,
                caps: Caps::empty(),
                nonce: [1; 16],
                agent: "small",
            }),
        ),
        &[],
    ));
    t.recv();
    let (o, _, st) = t.exec(1, &["help"]);
    assert!(o.len() > 300 && st == ExitStatus::Code(0));
    let mut b = [0u8; 16];
    let argv = Argv::join(&["help"], &mut b).unwrap();
    t.send(&enc(
        Header::new(
            2,
            Message::Exec(Exec {
                command: Command::Argv(argv),
                timeout_ms: None,
            }),
        ),
        &[],
    ));
    // Cancel arrives after the first chunk went out.
    let mut buf = [0u8; 90];
    let n = t.s.poll_transmit(&mut t.dev, &mut buf, 0);
    t.out.extend_from_slice(&buf[..n]);
    t.send(&enc(Header::new(3, Message::Cancel { target: 2 }), &[]));
    let f = t.recv();
    assert!(f.iter().all(|fr| fr.1.len() <= 64));
    assert!(f.len() < 4, "{}", f.len());
    assert_eq!(
        head(f.last().unwrap()).message,
        Message::Exit {
            status: ExitStatus::Cancelled
        }
    );
}

#[test]
fn keyed_session_authenticates_and_seals_everything() {
    let mut t = T::authed(64 * 1024);
    // `recv` checks that every reply is sealed and its tag verifies.
    assert_eq!(
        t.request(Header::new(1, Message::Ping { stamp: 7 })),
        [(
            enc(Header::new(1, Message::Pong { stamp: 7 }), &[])[18..].to_vec(),
            Vec::new()
        )]
    );
    let f = t.request(Header::new(2, Message::Echo { text: "sealed" }));
    assert_eq!(head(&f[0]).message, Message::EchoReply { text: "SEALED" });
    let (o, e, status) = t.exec(3, &["greet", "you"]);
    assert_eq!(
        (o.as_str(), e.as_str(), status),
        ("hi you\n", "warned", ExitStatus::Code(3))
    );
    // Output bodies are sealed too: long output in several frames.
    let (o, _, _) = t.exec(4, &["flood"]);
    assert!(o.len() > 300);
    let data = pattern(5000);
    let f = t.put(5, "s.bin", &data, false);
    assert!(
        matches!(
            head(f.last().unwrap()).message,
            Message::Done { bytes: 5000, .. }
        ),
        "{f:?}"
    );
    assert_eq!(t.get(6, "s.bin"), data);
    let f = t.request(Header::new(7, Message::List { path: "" }));
    assert!(matches!(head(&f[0]).message, Message::ListEntry(_)));
    // Byte by byte both ways gives the same.
    t.rx_step = 1;
    t.tx_step = 1;
    assert_eq!(t.get(8, "s.bin"), data);
    let f = t.put(9, "t.bin", &data[..1500], false);
    assert!(matches!(
        head(f.last().unwrap()).message,
        Message::Done { bytes: 1500, .. }
    ));
    assert!(!t.s.poll_close());
    let st = t.dev.stats();
    assert_eq!((st.auth_failures, st.integrity_failures), (0, 0));
}

#[test]
fn wrong_key_fails_and_the_peer_backs_off() {
    let mut t = T::keyed(1024, KEY);
    let f = t.authenticate(Some([7; 32]));
    assert_eq!(
        error_of(&f[0]),
        (
            0,
            ErrorCode::AUTH_FAILED,
            "authentication failed: the client's key differs from the server's; too many failures from 192.168.69.100: new connections are refused for 1 s".into()
        )
    );
    assert!(t.s.poll_close() && !t.s.is_authenticated());
    assert_eq!(t.dev.stats().auth_failures, 1);
    // Within the back-off even the right key is refused at Hello.
    t.now = 999;
    t.reconnect(PEER);
    let f = t.authenticate(Some(KEY));
    let (id, code, m) = error_of(&f[0]);
    assert_eq!((id, code), (0, ErrorCode::BUSY));
    assert!(
        m.contains("192.168.69.100") && m.contains("refused for 1 s more"),
        "{m}"
    );
    assert!(t.s.poll_close());
    // Another peer is not held back.
    t.reconnect(Peer::ipv4([192, 168, 69, 101]));
    assert!(matches!(
        head(&t.authenticate(Some(KEY))[0]).message,
        Message::AuthOk(_)
    ));
    // A second failure doubles the wait.
    t.now = 1_000;
    t.reconnect(PEER);
    assert_eq!(
        error_of(&t.authenticate(Some([8; 32]))[0]).1,
        ErrorCode::AUTH_FAILED
    );
    assert_eq!(t.dev.backoff().check(PEER, 1_000), Some(2_000));
    t.now = 3_000;
    t.reconnect(PEER);
    assert!(matches!(
        head(&t.authenticate(Some(KEY))[0]).message,
        Message::AuthOk(_)
    ));
    assert_eq!(
        t.dev.backoff().check(PEER, 3_000),
        None,
        "success forgets the peer"
    );
    assert_eq!(
        t.request(Header::new(1, Message::Ping { stamp: 1 })).len(),
        1
    );
    let st = t.dev.stats();
    assert_eq!((st.auth_failures, st.backoff_refusals), (2, 1));
    let (o, _, _) = t.exec(2, &["stats"]);
    assert!(
        o.contains(
            "security: 2 failed auth, 1 refused (back-off), 0 integrity failures, 0 timeouts"
        ),
        "{o}"
    );
}

#[test]
fn clients_without_the_key_or_without_sealing_are_refused() {
    // No key: Hello without AUTH_PSK.
    let mut t = T::keyed(1024, KEY);
    let f = t.authenticate(None);
    let (id, code, m) = error_of(&f[0]);
    assert_eq!((id, code), (0, ErrorCode::AUTH_REQUIRED));
    assert!(m.contains("pre-shared key"), "{m}");
    assert!(t.s.poll_close());
    // AUTH_PSK without SEAL.
    t.reconnect(PEER);
    let hello = Hello {
        version: 1,
        max_header: 512,
        max_chunk: 1024,
        caps: Caps::AUTH_PSK,
        nonce: [3; 16],
        agent: "t",
    };
    let f = t.request(Header::new(0, Message::Hello(hello)));
    assert_eq!(error_of(&f[0]).1, ErrorCode::AUTH_REQUIRED);
    assert!(t.s.poll_close());
    // Not failures of a key: no back-off.
    assert_eq!(t.dev.backoff().check(PEER, 0), None);
}

/// Hello → HelloAck on a keyed device, no Auth yet.
fn keyed_past_hello() -> T {
    let mut t = T::keyed(1024, KEY);
    let hs = ClientHandshake::new(Some(KEY), [1; 16], 512, 1024, Caps::empty(), "t");
    let f = t.request(Header::new(0, Message::Hello(hs.hello().clone())));
    assert!(matches!(head(&f[0]).message, Message::HelloAck(_)));
    t
}

#[test]
fn nothing_is_served_before_auth() {
    let mut b = [0u8; 32];
    let argv = Argv::join(&["led", "on"], &mut b).unwrap();
    let exec = Message::Exec(Exec {
        command: Command::Argv(argv),
        timeout_ms: None,
    });
    let put = Message::Put {
        path: "x",
        size: 1,
        force: true,
        resume: false,
    };
    for (id, m) in [
        (5, Message::Ping { stamp: 1 }),
        (6, exec),
        (7, put),
        (8, Message::List { path: "" }),
        (
            9,
            Message::Hello(Hello {
                version: 1,
                max_header: 512,
                max_chunk: 1024,
                caps: Caps::AUTH_PSK.union(Caps::SEAL),
                nonce: [1; 16],
                agent: "again",
            }),
        ),
        (10, Message::AuthOk(Proof { mac: [0; 32] })),
    ] {
        let mut t = keyed_past_hello();
        let f = t.request(Header::new(id, m));
        assert_eq!(f.len(), 1, "{f:?}");
        let (got, code, _) = error_of(&f[0]);
        assert_eq!((got, code), (id, ErrorCode::AUTH_REQUIRED));
        assert!(t.s.poll_close());
        // Nothing ran, nothing was stored, and later bytes are ignored.
        let f = t.request(Header::new(11, Message::Ping { stamp: 2 }));
        assert!(f.is_empty());
        assert!(!t.dev.led());
        assert_eq!(t.dev.store.usage().pending + t.dev.store.usage().files, 0);
    }
    // An Auth with a body, a sealed Auth, an unknown kind: refused the same way.
    let mut t = keyed_past_hello();
    t.send(&enc(
        Header::new(0, Message::Auth(Proof { mac: [0; 32] })),
        b"x",
    ));
    assert_eq!(error_of(&t.recv()[0]).1, ErrorCode::AUTH_REQUIRED);
    let mut t = keyed_past_hello();
    let mut other = SessionKeys {
        seal: crate::handshake::Sealer::new([1; 32]),
        open: Opener::new([1; 32]),
        encrypt: None,
        decrypt: None,
    };
    t.send(&seal(
        &mut other,
        Header::new(0, Message::Auth(Proof { mac: [0; 32] })),
        &[],
    ));
    assert_eq!(error_of(&t.recv()[0]).1, ErrorCode::AUTH_REQUIRED);
    let mut t = keyed_past_hello();
    let mut f = enc(Header::new(12, Message::Ping { stamp: 0 }), &[]);
    f[19] = 99;
    let repr = crate::wire::PrefixRepr {
        version: 1,
        flags: Flags::empty(),
        header_len: f[4] as u16,
        body_len: 0,
    };
    let (p, h) = f.split_at_mut(18);
    repr.emit(&mut crate::wire::Prefix::new_unchecked(p), h);
    t.send(&f);
    let (id, code, _) = error_of(&t.recv()[0]);
    assert_eq!((id, code), (12, ErrorCode::AUTH_REQUIRED));
}

/// The frames of an upload of `data` to `name` as request `id`, sealed:
/// Put, Data…, Done.
fn sealed_upload(t: &mut T, id: u32, name: &str, data: &[u8]) -> Vec<Vec<u8>> {
    let mut v = vec![t.frame(
        Header::new(
            id,
            Message::Put {
                path: name,
                size: data.len() as u64,
                force: true,
                resume: false,
            },
        ),
        &[],
    )];
    for c in data.chunks(1000) {
        v.push(t.frame(Header::new(id, Message::Data), c));
    }
    let digest: [u8; 32] = Sha256::digest(data).into();
    v.push(t.frame(
        Header::new(
            id,
            Message::Done {
                bytes: data.len() as u64,
                sha256: Some(digest),
            },
        ),
        &[],
    ));
    v
}

/// The session ended with INTEGRITY (id 0) after `replies` good frames.
fn assert_integrity(t: &mut T, replies: usize) {
    let f = t.recv();
    assert_eq!(f.len(), replies + 1, "{f:?}");
    let (id, code, _) = error_of(f.last().unwrap());
    assert_eq!((id, code), (0, ErrorCode::INTEGRITY));
    assert!(t.s.poll_close());
}

#[test]
fn frames_that_fail_their_tag_end_the_session_with_no_effect() {
    let data = pattern(2500);
    // A replayed frame: the first copy is served, the second is refused.
    let mut t = T::authed(16 * 1024);
    let ping = t.frame(Header::new(1, Message::Ping { stamp: 1 }), &[]);
    t.send(&ping);
    t.send(&ping);
    assert_integrity(&mut t, 1);

    // A reordered pair: the later frame first is refused, nothing runs.
    let mut t = T::authed(16 * 1024);
    let mut b = [0u8; 32];
    let argv = Argv::join(&["led", "on"], &mut b).unwrap();
    let first = t.frame(
        Header::new(
            1,
            Message::Exec(Exec {
                command: Command::Argv(argv),
                timeout_ms: None,
            }),
        ),
        &[],
    );
    let second = t.frame(Header::new(2, Message::Ping { stamp: 2 }), &[]);
    t.send(&second);
    t.send(&first);
    assert_integrity(&mut t, 0);
    assert!(!t.dev.led(), "a frame after a bad one was acted on");

    // A flipped body bit in upload data: refused, not committed, slot freed.
    let mut t = T::authed(16 * 1024);
    let mut up = sealed_upload(&mut t, 1, "u.bin", &data);
    let put = up.remove(0);
    let f = {
        t.send(&put);
        t.recv()
    };
    assert!(matches!(head(&f[0]).message, Message::PutReady { .. }));
    up[1][30] ^= 0x10;
    for fr in &up {
        t.send(fr);
    }
    assert_integrity(&mut t, 0);
    t.s.handle_close(&mut t.dev);
    assert!(t.dev.store.find("u.bin").is_none());
    assert_eq!(t.dev.store.usage().pending, 0);

    // A good upload whose Done has a bad tag: the digest matches, but it
    // is not committed.
    let mut t = T::authed(16 * 1024);
    let mut up = sealed_upload(&mut t, 1, "d.bin", &data);
    let last = up.len() - 1;
    let n = up[last].len();
    up[last][n - 1] ^= 1;
    for fr in &up {
        t.send(fr);
    }
    assert_integrity(&mut t, 1);
    t.s.handle_close(&mut t.dev);
    assert!(t.dev.store.find("d.bin").is_none());
    assert_eq!(t.dev.stats().files_stored, 0);

    // A frame spliced in from another session (other keys), and an
    // unsealed frame: refused.
    for spliced in [true, false] {
        let mut t = T::authed(16 * 1024);
        let f = if spliced {
            // Same key, other nonces: other session keys.
            let mut other = T::keyed(1024, KEY);
            other.now = 77;
            other.reconnect(PEER);
            other.authenticate(Some(KEY));
            other.frame(Header::new(1, Message::Ping { stamp: 1 }), &[])
        } else {
            enc(Header::new(1, Message::Ping { stamp: 1 }), &[])
        };
        t.send(&f);
        assert_integrity(&mut t, 0);
    }

    // A frame whose SEALED flag was cleared (checksum fixed up) and one
    // whose tag was cut off by another frame: refused.
    let mut t = T::authed(16 * 1024);
    let mut f = t.frame(Header::new(1, Message::Ping { stamp: 1 }), &[]);
    let hl = f[4] as usize;
    let cut = t.frame(Header::new(2, Message::Ping { stamp: 2 }), &[]);
    f.truncate(18 + hl + 8);
    f.extend(&cut);
    t.send(&f);
    assert_integrity(&mut t, 0);

    // The connection cut in the middle of the Done frame: nothing committed.
    let mut t = T::authed(16 * 1024);
    let up = sealed_upload(&mut t, 1, "c.bin", &data);
    for fr in &up[..up.len() - 1] {
        t.send(fr);
    }
    let done = &up[up.len() - 1];
    t.send(&done[..done.len() - 1]);
    let f = t.recv();
    assert_eq!(f.len(), 1, "only PutReady: {f:?}");
    t.s.handle_close(&mut t.dev);
    assert!(t.dev.store.find("c.bin").is_none());
    assert_eq!(t.dev.store.usage().pending, 1, "kept for resuming");

    // The device keeps serving a well-behaved client afterwards.
    t.reconnect(PEER);
    assert!(matches!(
        head(&t.authenticate(Some(KEY))[0]).message,
        Message::AuthOk(_)
    ));
    let f = t.put(1, "ok.bin", &data, false);
    assert!(matches!(
        head(f.last().unwrap()).message,
        Message::Done { .. }
    ));
    assert_eq!(t.get(2, "ok.bin"), data);
    assert!(
        t.dev.stats().integrity_failures == 0,
        "stats are per device, this one is fresh"
    );
}

#[test]
fn upload_errors_in_a_sealed_frame_wait_for_its_tag() {
    // Data beyond the announced size: the upload is discarded at once, but
    // the error is only sent once the frame's tag verified.
    let mut t = T::authed(16 * 1024);
    let put = t.frame(
        Header::new(
            1,
            Message::Put {
                path: "o.bin",
                size: 10,
                force: false,
                resume: false,
            },
        ),
        &[],
    );
    t.send(&put);
    assert!(matches!(
        head(&t.recv()[0]).message,
        Message::PutReady { .. }
    ));
    let data = t.frame(Header::new(1, Message::Data), &[5; 20]);
    t.send(&data[..data.len() - TAG_LEN]);
    assert!(t.recv().is_empty(), "said something before the tag");
    t.send(&data[data.len() - TAG_LEN..]);
    let (id, code, _) = error_of(&t.recv()[0]);
    assert_eq!((id, code), (1, ErrorCode::BAD_LENGTH));
    // The same with a bad tag: INTEGRITY only, the upload discarded.
    let mut t = T::authed(16 * 1024);
    let put = t.frame(
        Header::new(
            1,
            Message::Put {
                path: "o.bin",
                size: 10,
                force: false,
                resume: false,
            },
        ),
        &[],
    );
    t.send(&put);
    assert!(matches!(
        head(&t.recv()[0]).message,
        Message::PutReady { .. }
    ));
    let mut data = t.frame(Header::new(1, Message::Data), &[5; 20]);
    let n = data.len();
    data[n - 1] ^= 1;
    t.send(&data);
    assert_integrity(&mut t, 0);
    assert_eq!(t.dev.store.usage().pending, 0);
}

#[test]
fn deadlines_close_silent_and_idle_connections() {
    // No Hello: TIMEOUT at the handshake deadline, not before.
    let mut t = T::new(1024);
    assert_eq!(t.s.poll_timeout(), Some(10_000));
    t.s.handle_timeout(&mut t.dev, 9_999);
    assert!(t.recv().is_empty() && !t.s.poll_close());
    t.s.handle_timeout(&mut t.dev, 10_000);
    let (id, code, m) = error_of(&t.recv()[0]);
    assert_eq!((id, code), (0, ErrorCode::TIMEOUT));
    assert!(m.contains("handshake"), "{m}");
    assert!(t.s.poll_close());
    // Keyed, Hello but no Auth: the same deadline.
    let mut t = keyed_past_hello();
    t.s.handle_timeout(&mut t.dev, 10_000);
    assert_eq!(error_of(&t.recv()[0]).1, ErrorCode::TIMEOUT);
    // Open: traffic keeps it alive, silence ends it.
    let mut t = T::authed(1024);
    t.now = 100_000;
    assert_eq!(
        t.request(Header::new(1, Message::Ping { stamp: 1 })).len(),
        1
    );
    assert_eq!(t.s.poll_timeout(), Some(220_000));
    t.s.handle_timeout(&mut t.dev, 219_999);
    assert!(!t.s.poll_close());
    t.s.handle_timeout(&mut t.dev, 220_000);
    let (id, code, m) = error_of(&t.recv()[0]);
    assert_eq!((id, code), (0, ErrorCode::TIMEOUT));
    assert!(m.contains("idle"), "{m}");
    assert!(t.s.poll_close());
    assert_eq!(t.dev.stats().timeouts, 1);
    // A peer that reads nothing: the Error cannot go out; after the close
    // grace the session gives up on it.
    let mut t = T::new(1024);
    t.s.handle_timeout(&mut t.dev, 10_000);
    assert!(!t.s.poll_close(), "the Error is still queued");
    assert_eq!(t.s.poll_timeout(), Some(10_000 + CLOSE_GRACE_MS));
    t.s.handle_timeout(&mut t.dev, 10_000 + CLOSE_GRACE_MS);
    assert!(t.s.poll_close());
    assert_eq!(t.s.poll_timeout(), None);
    // Bytes the peer keeps sending meanwhile do not hold the grace open.
    let mut t = T::new(1024);
    t.s.handle_timeout(&mut t.dev, 10_000);
    assert_eq!(t.s.handle_bytes(&mut t.dev, &[0x55; 64], 11_500), 64);
    assert_eq!(t.s.poll_timeout(), Some(10_000 + CLOSE_GRACE_MS));
    t.s.handle_timeout(&mut t.dev, 10_000 + CLOSE_GRACE_MS);
    assert!(t.s.poll_close());
    // A slow reader of a download is closed too once nothing moves.
    let mut t = T::open(64 * 1024);
    t.put(1, "big", &pattern(20_000), false);
    let g = t.frame(
        Header::new(
            2,
            Message::Get {
                path: "big",
                offset: 0,
            },
        ),
        &[],
    );
    t.send(&g);
    let mut buf = [0u8; 100];
    t.s.poll_transmit(&mut t.dev, &mut buf, 5);
    assert_eq!(t.s.poll_timeout(), Some(120_005));
    t.s.handle_timeout(&mut t.dev, 120_005);
    t.s.handle_timeout(&mut t.dev, 120_005 + CLOSE_GRACE_MS);
    assert!(t.s.poll_close());
    t.s.handle_close(&mut t.dev);
    // Disabled deadlines never fire.
    let mut t = T::with_config(
        1024,
        Config {
            handshake_timeout_ms: 0,
            idle_timeout_ms: 0,
            ..Config::DEFAULT
        },
    );
    assert_eq!(t.s.poll_timeout(), None);
    t.send(&hello_frame(1));
    t.recv();
    assert_eq!(t.s.poll_timeout(), None);
}

#[test]
fn config_debug_never_shows_the_key() {
    let c = Config {
        key: Some([0xAB; 32]),
        ..Config::DEFAULT
    };
    let s = std::format!("{c:?}");
    assert!(
        s.contains("<redacted>") && !s.contains("171") && !s.to_lowercase().contains("ab, "),
        "{s}"
    );
}

/// Feed `bytes` to a second session `s` on `t.dev` and return what it sent.
fn other(t: &mut T, s: &mut DeviceConn<Vec<u8>>, bytes: &[u8]) -> Frames {
    let mut rest = bytes;
    let mut out = Vec::new();
    loop {
        let n = s.handle_bytes(&mut t.dev, rest, t.now);
        rest = &rest[n..];
        let mut buf = [0u8; 4096];
        let k = s.poll_transmit(&mut t.dev, &mut buf, t.now);
        out.extend_from_slice(&buf[..k]);
        if rest.is_empty() && k == 0 {
            break;
        }
        assert!(n > 0 || k > 0, "stalled");
    }
    let mut hb = [0u8; 1024];
    let mut d = Decoder::new(
        &mut hb[..],
        Limits {
            max_header: 1024,
            max_body: 1 << 20,
        },
    );
    let mut frames = Vec::new();
    let mut input = &out[..];
    let mut cur = None;
    loop {
        let (n, r) = d.handle_bytes(input);
        input = &input[n..];
        match r.unwrap() {
            Some(DecEvent::Header(f)) => cur = Some((f.header.to_vec(), Vec::new())),
            Some(DecEvent::Body(b)) => cur
                .as_mut()
                .map(|c: &mut (Vec<u8>, Vec<u8>)| c.1.extend_from_slice(b))
                .unwrap(),
            Some(DecEvent::End { .. }) => frames.push(cur.take().unwrap()),
            None => break,
        }
    }
    frames
}

#[test]
fn concurrent_puts_to_one_path() {
    let (a_data, b_data) = (pattern(3000), vec![0xbb; 2500]);
    let put = |id, size: usize, force| {
        enc(
            Header::new(
                id,
                Message::Put {
                    path: "same",
                    size: size as u64,
                    force,
                    resume: false,
                },
            ),
            &[],
        )
    };
    let data = |id, d: &[u8]| -> Vec<u8> {
        d.chunks(1000)
            .flat_map(|c| enc(Header::new(id, Message::Data), c))
            .collect()
    };
    let done = |id, d: &[u8]| {
        enc(
            Header::new(
                id,
                Message::Done {
                    bytes: d.len() as u64,
                    sha256: Some(Sha256::digest(d).into()),
                },
            ),
            &[],
        )
    };
    for force in [true, false] {
        let mut t = T::open(16 * 1024);
        let mut b = DeviceConn::new(vec![0; 512], vec![0; 640], vec![0; 512]);
        b.handle_accept(&mut t.dev, Peer::ipv4([10, 0, 0, 2]), [8; 16], 0);
        assert!(matches!(
            head(&other(&mut t, &mut b, &hello_frame(1))[0]).message,
            Message::HelloAck(_)
        ));
        // While A uploads, B's upload to the same name is refused (BUSY).
        let f = t.request(Header::new(
            1,
            Message::Put {
                path: "same",
                size: 3000,
                force,
                resume: false,
            },
        ));
        assert!(matches!(head(&f[0]).message, Message::PutReady { .. }));
        let f = other(&mut t, &mut b, &put(1, b_data.len(), force));
        let (id, code, text) = error_of(&f[0]);
        assert_eq!((id, code), (1, ErrorCode::BUSY));
        assert!(text.contains("another upload"), "{text}");
        t.send(&data(1, &a_data));
        t.send(&done(1, &a_data));
        let f = t.recv();
        assert!(
            matches!(head(&f[0]).message, Message::Done { bytes: 3000, .. }),
            "{f:?}"
        );
        // Then B may: with force it replaces A's file whole; without, EXISTS.
        let f = other(&mut t, &mut b, &put(2, b_data.len(), force));
        if force {
            assert!(matches!(head(&f[0]).message, Message::PutReady { .. }));
            assert!(other(&mut t, &mut b, &data(2, &b_data)).is_empty());
            let f = other(&mut t, &mut b, &done(2, &b_data));
            assert!(matches!(
                head(&f[0]).message,
                Message::Done { bytes: 2500, .. }
            ));
            assert_eq!(t.get(2, "same"), b_data);
        } else {
            assert_eq!(error_of(&f[0]).1, ErrorCode::EXISTS);
            assert_eq!(t.get(2, "same"), a_data);
        }
        let u = t.dev.store.usage();
        assert_eq!((u.files, u.pending), (1, 0));
    }
}

#[test]
fn the_device_never_negotiates_encryption() {
    // Even if a firmware lists ENCRYPT: the device seals, it does not encrypt.
    let mut t = T::with_config(
        1024,
        Config {
            key: Some(KEY),
            caps: Config::DEFAULT.caps.union(Caps::ENCRYPT),
            ..Config::DEFAULT
        },
    );
    let hs = ClientHandshake::new(Some(KEY), [1; 16], 512, 1024, Caps::empty(), "t");
    let mut hello = hs.hello().clone();
    hello.caps = hello.caps.union(Caps::ENCRYPT);
    let f = t.request(Header::new(0, Message::Hello(hello)));
    let Message::HelloAck(ack) = head(&f[0]).message else {
        panic!("{f:?}")
    };
    assert!(ack.caps.contains(Caps::SEAL) && !ack.caps.contains(Caps::ENCRYPT));
}

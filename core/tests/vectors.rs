//! Checks the test vectors in `core/PROTOCOL.md` against the code: every
//! message kind has a vector, each vector encodes byte-for-byte from its
//! message and decodes back to it.
//!
//! To print the vectors afresh (after a deliberate wire change, which also
//! needs a version bump): `TETHER_PRINT_VECTORS=1 cargo test -p tether-proto
//! --test vectors -- --nocapture`.

use std::collections::BTreeMap;

use tether_proto::codec::{encode_head, Decoder, Event, Limits};
use tether_proto::wire::{Flags, TAG_LEN};
use tether_proto::*;

struct Case {
    name: &'static str,
    header: Header<'static>,
    body: &'static [u8],
    flags: Flags,
}

fn case(name: &'static str, request_id: u32, message: Message<'static>) -> Case {
    Case {
        name,
        header: Header::new(request_id, message),
        body: b"",
        flags: Flags::empty(),
    }
}

fn cases() -> Vec<Case> {
    let d: Digest = core::array::from_fn(|i| i as u8);
    let mut v = vec![
        case(
            "hello",
            0,
            Message::Hello(Hello {
                version: 1,
                max_header: 8192,
                max_chunk: 262_144,
                caps: Caps::AUTH_PSK.union(Caps::SEAL),
                nonce: [0x11; 16],
                agent: "tether/0.1.0",
            }),
        ),
        case(
            "hello_ack",
            0,
            Message::HelloAck(HelloAck {
                version: 1,
                max_header: 512,
                max_chunk: 1024,
                caps: Caps::EXEC.union(Caps::FILES).union(Caps::WRITE),
                nonce: [0x22; 16],
                agent: "tether-sim/0.1.0",
                max_requests: 2,
                max_name: 48,
                max_path: 48,
            }),
        ),
        case("auth", 0, Message::Auth(Proof { mac: [0xAA; 32] })),
        case("auth_ok", 0, Message::AuthOk(Proof { mac: [0xBB; 32] })),
        case("ping", 1, Message::Ping { stamp: 0x0102_0304 }),
        case("pong", 1, Message::Pong { stamp: 0x0102_0304 }),
        case("echo", 2, Message::Echo { text: "hello" }),
        case("echo_reply", 2, Message::EchoReply { text: "HELLO" }),
        case("time", 3, Message::Time { format: "%H:%M" }),
        case(
            "time_reply",
            3,
            Message::TimeReply {
                unix_ms: 1_795_000_000_000,
                text: "12:34",
            },
        ),
        case(
            "exec_argv",
            4,
            Message::Exec(Exec {
                command: Command::Argv(Argv("ls\0-l")),
                timeout_ms: Some(5000),
            }),
        ),
        case(
            "exec_shell",
            5,
            Message::Exec(Exec {
                command: Command::Shell("echo hi >&2"),
                timeout_ms: None,
            }),
        ),
        case(
            "exit_code",
            4,
            Message::Exit {
                status: ExitStatus::Code(3),
            },
        ),
        case(
            "exit_signal",
            4,
            Message::Exit {
                status: ExitStatus::Signal(9),
            },
        ),
        case(
            "exit_timed_out",
            4,
            Message::Exit {
                status: ExitStatus::TimedOut,
            },
        ),
        case(
            "exit_cancelled",
            4,
            Message::Exit {
                status: ExitStatus::Cancelled,
            },
        ),
        case("cancel", 0, Message::Cancel { target: 4 }),
        case("stat", 7, Message::Stat { path: "a/b.txt" }),
        case(
            "stat_reply",
            7,
            Message::StatReply(Entry {
                name: "b.txt",
                kind: EntryKind::File,
                size: 300,
                modified: 1_700_000_000,
            }),
        ),
        case("list", 8, Message::List { path: "" }),
        case(
            "list_entry",
            8,
            Message::ListEntry(Entry {
                name: "sub",
                kind: EntryKind::Dir,
                size: 0,
                modified: 0,
            }),
        ),
        case(
            "get",
            9,
            Message::Get {
                path: "big.bin",
                offset: 65536,
            },
        ),
        case(
            "file_info",
            9,
            Message::FileInfo {
                size: 1_000_000,
                modified: 1_700_000_000,
                offset: 65536,
                prefix_sha256: Some(d),
            },
        ),
        case(
            "done_get",
            9,
            Message::Done {
                bytes: 1_000_000,
                sha256: Some(d),
            },
        ),
        case(
            "done_list",
            8,
            Message::Done {
                bytes: 2,
                sha256: None,
            },
        ),
        case(
            "put",
            10,
            Message::Put {
                path: "up.bin",
                size: 5,
                force: false,
                resume: true,
            },
        ),
        case(
            "put_ready",
            10,
            Message::PutReady {
                offset: 0,
                prefix_sha256: None,
            },
        ),
        case("remove", 11, Message::Remove { path: "old.txt" }),
        case(
            "error",
            12,
            Message::Error {
                code: ErrorCode::NOT_FOUND,
                message: "no such file: x",
            },
        ),
    ];
    v.push(Case {
        name: "output_stdout",
        header: Header::new(
            4,
            Message::Output {
                stream: Stream::Stdout,
            },
        ),
        body: b"hi\n",
        flags: Flags::empty(),
    });
    v.push(Case {
        name: "output_stderr_binary",
        header: Header::new(
            4,
            Message::Output {
                stream: Stream::Stderr,
            },
        ),
        body: b"\xff\x00\xfe",
        flags: Flags::empty(),
    });
    v.push(Case {
        name: "data",
        header: Header::new(10, Message::Data),
        body: b"12345",
        flags: Flags::empty(),
    });
    v.push(Case {
        name: "data_sealed",
        header: Header::new(10, Message::Data),
        body: b"ab",
        flags: Flags::SEALED,
    });
    v
}

/// The tag bytes used for sealed vectors (the tag is opaque to the codec).
const VECTOR_TAG: [u8; TAG_LEN] = [0x5A; TAG_LEN];

fn encode(c: &Case) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    let mut out = encode_head(&c.header, c.body.len() as u64, c.flags, &mut buf)
        .unwrap()
        .to_vec();
    out.extend_from_slice(c.body);
    if c.flags.contains(Flags::SEALED) {
        out.extend_from_slice(&VECTOR_TAG);
    }
    out
}

/// `name: hex` lines inside the ```vectors block of PROTOCOL.md.
fn spec_vectors() -> BTreeMap<String, Vec<u8>> {
    let spec = include_str!("../PROTOCOL.md");
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in spec.lines() {
        if line.trim() == "```vectors" {
            inside = true;
            continue;
        }
        if inside && line.trim() == "```" {
            inside = false;
            continue;
        }
        if !inside || line.trim().is_empty() {
            continue;
        }
        let (name, hexs) = line.split_once(':').expect("vector line is `name: hex`");
        let bytes = hex::decode(hexs.split_whitespace().collect::<String>()).expect("valid hex");
        assert!(
            out.insert(name.trim().to_string(), bytes).is_none(),
            "duplicate vector {name}"
        );
    }
    out
}

fn hex_spaced(b: &[u8]) -> String {
    // Prefix, header, then body/tag as separate groups for readability.
    let hl = u16::from_le_bytes([b[4], b[5]]) as usize;
    let p = hex::encode(&b[..18]);
    let h = hex::encode(&b[18..18 + hl]);
    let rest = hex::encode(&b[18 + hl..]);
    if rest.is_empty() {
        format!("{p} {h}")
    } else {
        format!("{p} {h} {rest}")
    }
}

#[test]
fn spec_vectors_match_the_code() {
    let cases = cases();
    if std::env::var_os("TETHER_PRINT_VECTORS").is_some() {
        for c in &cases {
            println!("{}: {}", c.name, hex_spaced(&encode(c)));
        }
    }
    let spec = spec_vectors();
    for c in &cases {
        let want = spec
            .get(c.name)
            .unwrap_or_else(|| panic!("PROTOCOL.md lacks vector {}", c.name));
        assert_eq!(&encode(c), want, "vector {} differs from the code", c.name);
    }
    for name in spec.keys() {
        assert!(
            cases.iter().any(|c| c.name == name),
            "PROTOCOL.md vector {name} has no case"
        );
    }
}

#[test]
fn every_message_kind_has_a_vector() {
    let kinds: Vec<Kind> = cases().iter().map(|c| c.header.message.kind()).collect();
    for n in 0..Kind::COUNT {
        let k = Kind::from_u32(n).unwrap();
        assert!(kinds.contains(&k), "no vector for kind {k:?}");
    }
}

#[test]
fn vectors_decode_to_their_messages_fed_whole_or_bytewise() {
    for c in cases() {
        let bytes = encode(&c);
        for step in [1, bytes.len()] {
            let mut hb = [0u8; 512];
            let mut dec = Decoder::new(
                &mut hb[..],
                Limits {
                    max_header: 512,
                    max_body: 64,
                },
            );
            let mut header = None;
            let mut body = Vec::new();
            let mut tag = None;
            let mut ended = false;
            for chunk in bytes.chunks(step) {
                let mut rest = chunk;
                loop {
                    let (n, r) = dec.handle_bytes(rest);
                    rest = &rest[n..];
                    match r.unwrap() {
                        Some(Event::Header(f)) => {
                            header = Some(f.parse().unwrap().message.kind());
                            assert_eq!(f.parse().unwrap(), c.header, "{}", c.name);
                        }
                        Some(Event::Body(b)) => body.extend_from_slice(b),
                        Some(Event::End { tag: t }) => {
                            tag = t;
                            ended = true;
                        }
                        None => break,
                    }
                }
            }
            assert!(ended, "{} did not end", c.name);
            assert_eq!(header, Some(c.header.message.kind()));
            assert_eq!(body, c.body, "{}", c.name);
            assert_eq!(tag.is_some(), c.flags.contains(Flags::SEALED));
        }
    }
}

#[test]
fn round_trip_of_random_messages() {
    // A small deterministic generator: every string length, id and offset class.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let names = ["", "a", "dir/file.txt", "ünïcödé", "x".repeat(300).leak()];
    for _ in 0..2000 {
        let r = next();
        let name: &'static str = names[(r % names.len() as u64) as usize];
        let msg = match (r >> 8) % 6 {
            0 => Message::Get {
                path: name,
                offset: next(),
            },
            1 => Message::Put {
                path: name,
                size: next(),
                force: r & 1 == 1,
                resume: r & 2 == 2,
            },
            2 => Message::Error {
                code: ErrorCode((next() % 65536) as u16),
                message: name,
            },
            3 => Message::Exit {
                status: ExitStatus::Code(next() as i32),
            },
            4 => Message::Done {
                bytes: next(),
                sha256: (r & 1 == 1).then_some([r as u8; 32]),
            },
            _ => Message::Ping { stamp: next() },
        };
        let h = Header::new(next() as u32, msg);
        let mut buf = [0u8; 512];
        let n = encode_frame(&h, &[], &mut buf).unwrap().len();
        let mut hb = [0u8; 512];
        let mut dec = Decoder::new(
            &mut hb[..],
            Limits {
                max_header: 512,
                max_body: 0,
            },
        );
        let (used, ev) = dec.handle_bytes(&buf[..n]);
        assert_eq!(used, n);
        let Ok(Some(Event::Header(f))) = ev else {
            panic!("no header for {h:?}")
        };
        assert_eq!(f.parse().unwrap(), h);
    }
}

#[test]
fn error_table_in_spec_matches_the_code() {
    let spec = include_str!("../PROTOCOL.md");
    let section = spec
        .split("## 4. Error codes")
        .nth(1)
        .expect("spec has section 4");
    let section = section.split("\n## ").next().unwrap_or(section);
    let table: Vec<(u16, String)> = section
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            // | code | `NAME` | meaning |
            let code = cols.get(1)?.parse::<u16>().ok()?;
            let name = cols.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((code, name.to_string()))
        })
        .filter(|(_, n)| n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert_eq!(
        table.len(),
        ErrorCode::ALL.len(),
        "spec table and ErrorCode::ALL differ in size"
    );
    for (code, name) in table {
        assert_eq!(ErrorCode(code).name(), Some(name.as_str()), "code {code}");
    }
}

//! Checks the test vectors in `core/PROTOCOL.md` against the code: every
//! message kind has a vector, each vector encodes byte-for-byte from its
//! message and decodes back to it. The keyed-handshake vectors (section 7.2)
//! are computed with the public handshake API and also recomputed from the
//! spec's text alone (see the second half of this file).
//!
//! To print the vectors afresh (after a deliberate wire change, which also
//! needs a version bump): `TETHER_PRINT_VECTORS=1 cargo test -p tether-proto
//! --test vectors -- --nocapture`.

use std::collections::BTreeMap;

use tether_proto::codec::{encode_frame, encode_head, Decoder, Event, Limits};
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
    spec_block("vectors")
}

fn hex_spaced(b: &[u8]) -> String {
    // Prefix, header, body and tag as separate groups for readability.
    let hl = u16::from_le_bytes([b[4], b[5]]) as usize;
    let tag = if b[3] & Flags::SEALED.bits() != 0 {
        TAG_LEN
    } else {
        0
    };
    let groups = [
        &b[..18],
        &b[18..18 + hl],
        &b[18 + hl..b.len() - tag],
        &b[b.len() - tag..],
    ];
    groups
        .iter()
        .filter(|g| !g.is_empty())
        .map(hex::encode)
        .collect::<Vec<_>>()
        .join(" ")
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

// ---------------------------------------------------------------------------
// Keyed handshake, sealing and encryption (the ```handshake block of section 7)
// ---------------------------------------------------------------------------
//
// Two complete keyed handshakes from a fixed key and fixed nonces: one that
// negotiates SEAL (frames carry an HMAC tag) and one that also negotiates
// ENCRYPT (frames are ChaCha20-Poly1305). `handshake_vectors_match_the_code`
// runs both through the public API of `tether_proto::handshake`;
// `handshake_vectors_from_first_principles` recomputes every value from the
// text of PROTOCOL.md with sha2, hmac, chacha20poly1305 and a bitwise CRC-32C,
// without the crate's code.

use tether_proto::handshake::{
    client_proof, direction_key, server_proof, ClientHandshake, Direction, FrameCipher, Opener,
    Sealer, ServerHandshake, ServerPolicy, SessionKeys, Transcript,
};
use tether_proto::wire::{Prefix, PrefixRepr, PREFIX_LEN};

/// `N` bytes counting up from `first`.
const fn counting<const N: usize>(first: u8) -> [u8; N] {
    let mut b = [0u8; N];
    let mut i = 0;
    while i < N {
        b[i] = first + i as u8;
        i += 1;
    }
    b
}

/// The pre-shared key of the handshake vectors: bytes 0x00..=0x1f.
const HS_KEY: [u8; 32] = counting(0x00);
/// The client's Hello nonce: 0xa0..=0xaf.
const HS_CLIENT_NONCE: [u8; 16] = counting(0xa0);
/// The server's HelloAck nonce: 0xb0..=0xbf.
const HS_SERVER_NONCE: [u8; 16] = counting(0xb0);
const HS_AGENT: &str = "tether/0.1.0";
const HS_PING_STAMP: u64 = 0x0102_0304;
const HS_BODY: &[u8] = b"12345";

/// What the server offers in both handshakes (before the key adds AUTH_PSK
/// and SEAL); `encrypt` adds ENCRYPT.
fn hs_policy(encrypt: bool) -> ServerPolicy {
    let mut caps = Caps::EXEC
        .union(Caps::SHELL)
        .union(Caps::FILES)
        .union(Caps::WRITE)
        .union(Caps::DIRS)
        .union(Caps::RESUME);
    if encrypt {
        caps = caps.union(Caps::ENCRYPT);
    }
    ServerPolicy {
        max_header: 1024,
        max_chunk: 65536,
        caps,
        max_requests: 64,
        max_name: 255,
        max_path: 4095,
    }
}

/// One frame of a body-less header, unsealed.
fn plain_frame(h: &Header<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    encode_frame(h, &[], &mut buf).unwrap().to_vec()
}

/// A sealed frame: head (SEALED), body, then the tag from `sealer`.
fn sealed_frame(sealer: &mut Sealer, h: &Header<'_>, body: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    let head = encode_head(h, body.len() as u64, Flags::SEALED, &mut buf).unwrap();
    let mut tb = sealer.begin(head);
    tb.update(body);
    let tag = tb.finish();
    let mut out = head.to_vec();
    out.extend_from_slice(body);
    out.extend_from_slice(&tag);
    out
}

/// An encrypted frame (flags SEALED | ENCRYPTED) from `cipher`.
fn encrypted_frame(cipher: &mut FrameCipher, h: &Header<'_>, body: &[u8]) -> Vec<u8> {
    let mut hb = vec![0u8; 1024];
    let header = h.emit(&mut hb).unwrap().to_vec();
    let repr = PrefixRepr {
        version: 1,
        flags: Flags::SEALED.union(Flags::ENCRYPTED),
        header_len: header.len() as u16,
        body_len: body.len() as u64,
    };
    let mut text = header.clone();
    text.extend_from_slice(body);
    let tag = cipher.seal_in_place(&repr, &mut text);
    let mut prefix = [0u8; PREFIX_LEN];
    // The checksum covers the ciphertext header.
    repr.emit(
        &mut Prefix::new_unchecked(&mut prefix[..]),
        &text[..header.len()],
    );
    let mut out = prefix.to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&tag);
    out
}

/// Everything one keyed handshake produces, computed with the crate's API.
struct Keyed {
    hello: Vec<u8>,
    hello_ack: Vec<u8>,
    transcript: [u8; 32],
    auth: Vec<u8>,
    auth_ok: Vec<u8>,
    client: SessionKeys,
    server: SessionKeys,
}

fn keyed_handshake(encrypt: bool) -> Keyed {
    let want = if encrypt {
        Caps::ENCRYPT
    } else {
        Caps::empty()
    };
    let mut c = ClientHandshake::new(Some(HS_KEY), HS_CLIENT_NONCE, 8192, 262_144, want, HS_AGENT);
    let hello = Header::new(0, Message::Hello(c.hello().clone()));
    let mut s = ServerHandshake::new(Some(HS_KEY));
    let ack = s
        .handle_hello(c.hello(), &hs_policy(encrypt), HS_SERVER_NONCE, HS_AGENT)
        .unwrap();
    assert!(s.needs_auth());
    let hello_ack = Header::new(0, Message::HelloAck(ack.clone()));
    // T over the header bytes exactly as framed.
    let (hello_f, ack_f) = (plain_frame(&hello), plain_frame(&hello_ack));
    let mut tr = Transcript::new();
    tr.add(&hello_f[PREFIX_LEN..]);
    tr.add(&ack_f[PREFIX_LEN..]);
    let transcript = tr.finish();
    let proof = c.handle_hello_ack(&ack).unwrap().expect("Auth is required");
    assert_eq!(proof.mac, client_proof(&HS_KEY, &transcript));
    let (ok, server) = s.handle_auth(&proof).unwrap();
    assert_eq!(ok.mac, server_proof(&HS_KEY, &transcript));
    let client = c.handle_auth_ok(&ok).unwrap();
    assert_eq!(client.encrypted(), encrypt);
    assert_eq!(server.encrypted(), encrypt);
    Keyed {
        hello: hello_f,
        hello_ack: ack_f,
        transcript,
        auth: plain_frame(&Header::new(0, Message::Auth(proof))),
        auth_ok: plain_frame(&Header::new(0, Message::AuthOk(ok))),
        client,
        server,
    }
}

fn hs_ping() -> Header<'static> {
    Header::new(
        1,
        Message::Ping {
            stamp: HS_PING_STAMP,
        },
    )
}

fn hs_pong() -> Header<'static> {
    Header::new(
        1,
        Message::Pong {
            stamp: HS_PING_STAMP,
        },
    )
}

fn hs_echo() -> Header<'static> {
    Header::new(1, Message::Echo { text: "hello" })
}

fn hs_echo_reply() -> Header<'static> {
    Header::new(1, Message::EchoReply { text: "HELLO" })
}

fn hs_data() -> Header<'static> {
    Header::new(2, Message::Data)
}

/// The handshake vectors, computed with the crate's API, in spec order.
fn handshake_cases() -> Vec<(&'static str, Vec<u8>)> {
    let mut v = vec![("key", HS_KEY.to_vec())];
    // Sealed session.
    let mut k = keyed_handshake(false);
    let ping = sealed_frame(&mut k.client.seal, &hs_ping(), &[]);
    let data = sealed_frame(&mut k.client.seal, &hs_data(), HS_BODY);
    let pong = sealed_frame(&mut k.server.seal, &hs_pong(), &[]);
    v.extend([
        ("sealed_hello", k.hello),
        ("sealed_hello_ack", k.hello_ack),
        ("sealed_t", k.transcript.to_vec()),
        ("sealed_auth", k.auth),
        ("sealed_auth_ok", k.auth_ok),
        (
            "sealed_k_c2s",
            direction_key(&HS_KEY, &k.transcript, Direction::ClientToServer).to_vec(),
        ),
        (
            "sealed_k_s2c",
            direction_key(&HS_KEY, &k.transcript, Direction::ServerToClient).to_vec(),
        ),
        ("sealed_ping", ping),
        ("sealed_data", data),
        ("sealed_pong", pong),
    ]);
    // Encrypted session. The crate keeps E_c2s and E_s2c inside its
    // FrameCiphers: they are checked through the frames those produce.
    let mut k = keyed_handshake(true);
    let enc = k.client.encrypt.as_mut().unwrap();
    let echo = encrypted_frame(enc, &hs_echo(), &[]);
    let data = encrypted_frame(enc, &hs_data(), HS_BODY);
    let reply = encrypted_frame(k.server.encrypt.as_mut().unwrap(), &hs_echo_reply(), &[]);
    v.extend([
        ("enc_hello", k.hello),
        ("enc_hello_ack", k.hello_ack),
        ("enc_t", k.transcript.to_vec()),
        ("enc_auth", k.auth),
        ("enc_auth_ok", k.auth_ok),
        (
            "enc_e_c2s",
            hmac_sha256(&HS_KEY, &[b"tether-v1 enc c2s", &k.transcript]).to_vec(),
        ),
        (
            "enc_e_s2c",
            hmac_sha256(&HS_KEY, &[b"tether-v1 enc s2c", &k.transcript]).to_vec(),
        ),
        ("enc_echo", echo),
        ("enc_data", data),
        ("enc_echo_reply", reply),
    ]);
    v
}

/// `name: hex` lines inside the ```TAG block of PROTOCOL.md.
fn spec_block(tag: &str) -> BTreeMap<String, Vec<u8>> {
    let spec = include_str!("../PROTOCOL.md");
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in spec.lines() {
        if line.trim() == format!("```{tag}") {
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
    assert!(!out.is_empty(), "PROTOCOL.md has no ```{tag} block");
    out
}

/// The handshake vectors that are values (key, hashes, keys), not frames.
fn is_value(name: &str) -> bool {
    name == "key" || name.ends_with("_t") || name.contains("_k_") || name.contains("_e_")
}

/// A frame as `prefix header [body] [tag]`, a value as one hex string.
fn hex_value(name: &str, b: &[u8]) -> String {
    if is_value(name) {
        hex::encode(b)
    } else {
        hex_spaced(b)
    }
}

#[test]
fn handshake_vectors_match_the_code() {
    let cases = handshake_cases();
    if std::env::var_os("TETHER_PRINT_VECTORS").is_some() {
        for (name, b) in &cases {
            println!("{name}: {}", hex_value(name, b));
        }
    }
    let spec = spec_block("handshake");
    for (name, bytes) in &cases {
        let want = spec
            .get(*name)
            .unwrap_or_else(|| panic!("PROTOCOL.md lacks handshake vector {name}"));
        assert_eq!(
            hex_value(name, bytes),
            hex_value(name, want),
            "handshake vector {name} differs from the code"
        );
    }
    for name in spec.keys() {
        assert!(
            cases.iter().any(|(n, _)| n == name),
            "PROTOCOL.md handshake vector {name} has no case"
        );
    }
}

/// Feed `frame` to a decoder (encryption switched on as asked) and return
/// its prefix, header bytes, body and tag.
fn decode_one(frame: &[u8], encrypted: bool) -> (PrefixRepr, Vec<u8>, Vec<u8>, [u8; TAG_LEN]) {
    let mut hb = [0u8; 1024];
    let mut dec = Decoder::new(
        &mut hb[..],
        Limits {
            max_header: 1024,
            max_body: 65536,
        },
    );
    dec.set_encryption(encrypted);
    let (mut repr, mut header, mut body) = (None, Vec::new(), Vec::new());
    let mut rest = frame;
    loop {
        let (n, r) = dec.handle_bytes(rest);
        rest = &rest[n..];
        match r.unwrap() {
            Some(Event::Header(f)) => {
                repr = Some(f.prefix);
                header = f.header.to_vec();
            }
            Some(Event::Body(b)) => body.extend_from_slice(b),
            Some(Event::End { tag: Some(t) }) => {
                assert!(rest.is_empty());
                return (repr.unwrap(), header, body, t);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn handshake_vectors_verify_at_the_receiver() {
    let spec = spec_block("handshake");
    let get = |n: &str| spec.get(n).unwrap_or_else(|| panic!("no vector {n}"));
    // Sealed: the server's opener accepts the client's frames in order (seq
    // 0 then 1) and refuses them out of order; the client's accepts the Pong.
    let k = keyed_handshake(false);
    let mut open = k.server.open.clone();
    for name in ["sealed_ping", "sealed_data"] {
        let (repr, header, body, tag) = decode_one(get(name), false);
        let mut p = [0u8; PREFIX_LEN];
        repr.emit(&mut Prefix::new_unchecked(&mut p[..]), &header);
        let mut tb = open.begin(&[&p[..], &header].concat());
        tb.update(&body);
        assert!(Opener::verify(tb, &tag), "{name}");
    }
    let mut reordered = k.server.open.clone();
    let (repr, header, body, tag) = decode_one(get("sealed_data"), false);
    let f = tether_proto::Frame {
        prefix: repr,
        header: &header,
    };
    let mut tb = reordered.begin_frame(&f);
    tb.update(&body);
    assert!(!Opener::verify(tb, &tag), "seq 1 checked as seq 0");
    let mut copen = k.client.open.clone();
    let (repr, header, _, tag) = decode_one(get("sealed_pong"), false);
    let f = tether_proto::Frame {
        prefix: repr,
        header: &header,
    };
    assert!(Opener::verify(copen.begin_frame(&f), &tag));
    assert_eq!(f.parse().unwrap(), hs_pong());
    // Encrypted: the server decrypts the client's frames in order.
    let mut k = keyed_handshake(true);
    let dec = k.server.decrypt.as_mut().unwrap();
    for (name, h, body) in [
        ("enc_echo", hs_echo(), &b""[..]),
        ("enc_data", hs_data(), HS_BODY),
    ] {
        let (repr, header, cbody, tag) = decode_one(get(name), true);
        assert_eq!(repr.flags.bits(), 0x03);
        let mut text = [header.clone(), cbody].concat();
        assert!(dec.open_in_place(&repr, &mut text, &tag), "{name}");
        let hl = header.len();
        assert_eq!(Header::parse(&text[..hl]).unwrap(), h, "{name}");
        assert_eq!(&text[hl..], body, "{name}");
    }
    let (repr, header, _, tag) = decode_one(get("enc_echo_reply"), true);
    let mut text = header.clone();
    let cdec = k.client.decrypt.as_mut().unwrap();
    assert!(cdec.open_in_place(&repr, &mut text, &tag));
    assert_eq!(Header::parse(&text).unwrap(), hs_echo_reply());
    // An encrypted frame is refused by a decoder that was not switched on.
    let mut hb = [0u8; 64];
    let mut plain = Decoder::new(&mut hb[..], Limits::HANDSHAKE);
    assert!(plain.handle_bytes(get("enc_echo")).1.is_err());
}

// --- First principles: only the text of PROTOCOL.md, sha2, hmac, chacha20poly1305.

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// CRC-32C as section 1.1 states it: reflected polynomial 0x82F63B78,
/// initial value and final XOR 0xFFFFFFFF.
fn crc32c(parts: &[&[u8]]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for p in parts {
        for &b in *p {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
    }
    crc ^ 0xFFFF_FFFF
}

/// An unsigned LEB128 varint (section 1.2).
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// A frame from its parts, prefix and checksum written by hand (section 1.1):
/// the checksum covers prefix bytes 0..14 and `header` as sent (the
/// ciphertext header of an encrypted frame).
fn frame_by_hand(flags: u8, header: &[u8], body: &[u8], tag: &[u8]) -> Vec<u8> {
    let mut p = vec![0x54, 0x48, 0x01, flags];
    p.extend_from_slice(&(header.len() as u16).to_le_bytes());
    p.extend_from_slice(&(body.len() as u64).to_le_bytes());
    let crc = crc32c(&[&p, header]);
    p.extend_from_slice(&crc.to_le_bytes());
    [p, header.to_vec(), body.to_vec(), tag.to_vec()].concat()
}

/// Hello's header (request id 0, kind 0) by hand.
fn hello_header_by_hand(caps: u32) -> Vec<u8> {
    let mut h = vec![0x00, 0x00, 0x01];
    h.extend(varint(8192));
    h.extend(varint(262_144));
    h.extend(varint(u64::from(caps)));
    h.extend_from_slice(&HS_CLIENT_NONCE);
    h.extend(varint(HS_AGENT.len() as u64));
    h.extend_from_slice(HS_AGENT.as_bytes());
    h
}

/// HelloAck's header (request id 0, kind 1) by hand: the smaller limits,
/// the server's capabilities.
fn hello_ack_header_by_hand(caps: u32) -> Vec<u8> {
    let mut h = vec![0x00, 0x01, 0x01];
    h.extend(varint(1024));
    h.extend(varint(65536));
    h.extend(varint(u64::from(caps)));
    h.extend_from_slice(&HS_SERVER_NONCE);
    h.extend(varint(HS_AGENT.len() as u64));
    h.extend_from_slice(HS_AGENT.as_bytes());
    h.extend(varint(64));
    h.extend(varint(255));
    h.extend(varint(4095));
    h
}

#[test]
fn handshake_vectors_from_first_principles() {
    use chacha20poly1305::aead::{AeadInOut, KeyInit};
    let spec = spec_block("handshake");
    let get = |n: &str| {
        spec.get(n)
            .unwrap_or_else(|| panic!("no vector {n}"))
            .clone()
    };
    assert_eq!(get("key"), (0u8..32).collect::<Vec<_>>());
    let key = get("key");
    // Caps: EXEC 0x1, SHELL 0x2, FILES 0x4, WRITE 0x8, AUTH_PSK 0x10,
    // SEAL 0x20, ENCRYPT 0x40, DIRS 0x80, RESUME 0x100.
    let offered = 0x1 | 0x2 | 0x4 | 0x8 | 0x80 | 0x100;
    for (session, hello_caps, ack_caps) in [
        ("sealed", 0x30, offered | 0x30),
        ("enc", 0x70, offered | 0x70),
    ] {
        let name = |n: &str| format!("{session}_{n}");
        // Hello and HelloAck, every byte.
        let hello_h = hello_header_by_hand(hello_caps);
        let ack_h = hello_ack_header_by_hand(ack_caps);
        assert_eq!(get(&name("hello")), frame_by_hand(0, &hello_h, &[], &[]));
        assert_eq!(get(&name("hello_ack")), frame_by_hand(0, &ack_h, &[], &[]));
        // T = SHA-256(Hello header ‖ HelloAck header).
        let t = sha256(&[&hello_h, &ack_h]);
        assert_eq!(get(&name("t")), t, "{session} T");
        // Proofs: HMAC-SHA256(K, label ‖ T); Auth and AuthOk carry id 0.
        let auth = hmac_sha256(&key, &[b"tether-v1 client", &t]);
        let auth_ok = hmac_sha256(&key, &[b"tether-v1 server", &t]);
        let auth_h = [&[0x00, 0x02][..], &auth].concat();
        let auth_ok_h = [&[0x00, 0x03][..], &auth_ok].concat();
        assert_eq!(get(&name("auth")), frame_by_hand(0, &auth_h, &[], &[]));
        assert_eq!(
            get(&name("auth_ok")),
            frame_by_hand(0, &auth_ok_h, &[], &[])
        );
        let ping_h = [&[0x01, 0x04][..], &varint(HS_PING_STAMP)].concat();
        let pong_h = [&[0x01, 0x05][..], &varint(HS_PING_STAMP)].concat();
        let data_h = [0x02, 0x14];
        if session == "sealed" {
            let k_c2s = hmac_sha256(&key, &[b"tether-v1 c2s", &t]);
            let k_s2c = hmac_sha256(&key, &[b"tether-v1 s2c", &t]);
            assert_eq!(get("sealed_k_c2s"), k_c2s);
            assert_eq!(get("sealed_k_s2c"), k_s2c);
            // tag = HMAC-SHA256(K_dir, seq_le64 ‖ 18 prefix bytes ‖ header ‖ body)[..16]
            for (n, k, seq, h, body) in [
                ("sealed_ping", k_c2s, 0u64, &ping_h[..], &[][..]),
                ("sealed_data", k_c2s, 1, &data_h[..], HS_BODY),
                ("sealed_pong", k_s2c, 0, &pong_h[..], &[][..]),
            ] {
                let unsealed = frame_by_hand(0x01, h, body, &[]);
                let prefix = &unsealed[..PREFIX_LEN];
                let mac = hmac_sha256(&k, &[&seq.to_le_bytes(), prefix, h, body]);
                assert_eq!(get(n), frame_by_hand(0x01, h, body, &mac[..16]), "{n}");
            }
        } else {
            let e_c2s = hmac_sha256(&key, &[b"tether-v1 enc c2s", &t]);
            let e_s2c = hmac_sha256(&key, &[b"tether-v1 enc s2c", &t]);
            assert_eq!(get("enc_e_c2s"), e_c2s);
            assert_eq!(get("enc_e_s2c"), e_s2c);
            let echo_h = [&[0x01, 0x06, 0x05][..], b"hello"].concat();
            let reply_h = [&[0x01, 0x07, 0x05][..], b"HELLO"].concat();
            for (n, e, seq, h, body) in [
                ("enc_echo", e_c2s, 0u64, &echo_h[..], &[][..]),
                ("enc_data", e_c2s, 1, &data_h[..], HS_BODY),
                ("enc_echo_reply", e_s2c, 0, &reply_h[..], &[][..]),
            ] {
                let aead = chacha20poly1305::ChaCha20Poly1305::new(&e.into());
                // nonce = 4 zero bytes ‖ seq_le64; AD = prefix bytes 0..14.
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&seq.to_le_bytes());
                let mut ad = vec![0x54, 0x48, 0x01, 0x03];
                ad.extend_from_slice(&(h.len() as u16).to_le_bytes());
                ad.extend_from_slice(&(body.len() as u64).to_le_bytes());
                let mut text = [h, body].concat();
                let tag = aead
                    .encrypt_inout_detached(&nonce.into(), &ad, (&mut text[..]).into())
                    .unwrap();
                let (ch, cb) = text.split_at(h.len());
                let want = frame_by_hand(0x03, ch, cb, &tag);
                assert_eq!(&want[..14], &ad[..]);
                assert_eq!(get(n), want, "{n}");
            }
        }
    }
}

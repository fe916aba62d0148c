//! Hostile inputs against the simulated device (keyed, over the virtual
//! wire): for each, the exact error the client sees (code and request id),
//! whether the connection closes, that a well-behaved client is served
//! afterwards, and that the store (the device's whole "root") is unchanged
//! with no upload left pending. Deterministic: virtual clock, no faults.
//!
//! Three stages: raw bytes on a fresh connection (before Hello), frames
//! after HelloAck but before Auth, and frames on an authenticated, sealed
//! session. The store is flat: there are no directories or symlinks to
//! escape through, so path traversal in every spelling must be refused or
//! name a file that does not exist.

use sha2::{Digest as _, Sha256};
use tether_proto::codec::Limits;
use tether_proto::handshake::{ClientHandshake, Sealer};
use tether_proto::io::FrameReader;
use tether_proto::message::Proof;
use tether_proto::wire::{Flags, Prefix, PrefixRepr, PREFIX_LEN, TAG_LEN};
use tether_proto::{encode_frame, Argv, Caps, Command, ErrorCode, Exec, Header, Hello, Message};
use tether_sim::client::Client;
use tether_sim::embedded_io;
use tether_sim::smoltcp::time::Duration;
use tether_sim::virt::{VirtualConfig, VirtualNet, VirtualTcp};
use tether_sim::{Key, SimConfig};

const KEY: [u8; 32] = *b"tether sim-hostile test key 0002";

/// What the client must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// This Error (request id, code); then the device closes the connection.
    Fatal(u32, ErrorCode),
    /// This Error; the connection goes on (checked with a Ping).
    Error(u32, ErrorCode),
    /// No reply; the connection goes on.
    Ignored,
    /// The device closes without a reply (the client closed first).
    Closed,
    /// Not an error: served (the reply kind given).
    Served(tether_proto::Kind),
}

use Expect::*;

// ---- frame building ----

fn enc(h: Header<'_>, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 2048 + body.len()];
    let n = encode_frame(&h, body, &mut b).unwrap().len();
    b.truncate(n);
    b
}

/// A frame around raw header bytes, with a valid checksum.
fn raw(version: u8, flags: u8, header: &[u8], body_len: u64, body: &[u8]) -> Vec<u8> {
    let mut p = [0u8; PREFIX_LEN];
    let repr = PrefixRepr {
        version: 1,
        flags: Flags::from_bits_retain(flags),
        header_len: header.len() as u16,
        body_len,
    };
    repr.emit(&mut Prefix::new_unchecked(&mut p[..]), header);
    // Version and flags outside what PrefixRepr allows: patched after the
    // checksum (the decoder refuses them before it looks at the checksum).
    p[2] = version;
    let mut f = p.to_vec();
    f.extend_from_slice(header);
    f.extend_from_slice(body);
    f
}

/// The header bytes of `h`.
fn hb(h: Header<'_>) -> Vec<u8> {
    enc(h, &[])[PREFIX_LEN..].to_vec()
}

/// A prefix only (the header and body it announces never come).
fn prefix_only(header_len: u16, body_len: u64) -> Vec<u8> {
    let mut p = [0u8; PREFIX_LEN];
    PrefixRepr {
        version: 1,
        flags: Flags::empty(),
        header_len,
        body_len,
    }
    .emit(&mut Prefix::new_unchecked(&mut p[..]), &[]);
    p.to_vec()
}

fn hello(caps: Caps) -> Hello<'static> {
    Hello {
        version: 1,
        max_header: 4096,
        max_chunk: 4096,
        caps,
        nonce: [7; 16],
        agent: "hostile",
    }
}

fn good_hello() -> Vec<u8> {
    enc(
        Header::new(0, Message::Hello(hello(Caps::AUTH_PSK.union(Caps::SEAL)))),
        &[],
    )
}

fn exec(args: &[&str]) -> Vec<u8> {
    let mut b = vec![0u8; 1024];
    let argv = Argv::join(args, &mut b).unwrap();
    hb(Header::new(
        0,
        Message::Exec(Exec {
            command: Command::Argv(argv),
            timeout_ms: None,
        }),
    ))
}

// ---- the net and the checks ----

fn keyed_net() -> VirtualNet {
    VirtualNet::new(VirtualConfig {
        seed: 0x4057_11e5,
        device: SimConfig {
            store_bytes: 64 * 1024,
            key: Some(Key(KEY)),
            ..SimConfig::default()
        },
        ..VirtualConfig::default()
    })
}

fn connect(n: &mut VirtualNet) -> Client<VirtualTcp<'_>> {
    let tcp = n.connect().expect("connect");
    Client::connect_with_key(tcp, Some(KEY)).expect("authenticated handshake")
}

fn keep() -> Vec<u8> {
    (0..3000u32).map(|i| (i * 7 + 1) as u8).collect()
}

/// The store as a well-behaved client sees it: names, sizes, digests.
fn snapshot(c: &mut Client<VirtualTcp<'_>>) -> Vec<(String, u64, [u8; 32])> {
    let mut v: Vec<_> = c
        .list("")
        .unwrap()
        .into_iter()
        .map(|e| {
            let data = c.get(&e.name).unwrap();
            (e.name, e.size, Sha256::digest(&data).into())
        })
        .collect();
    v.sort();
    v
}

fn raw_send(tcp: &mut VirtualTcp<'_>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match embedded_io::Write::write(tcp, bytes) {
            Ok(k) => bytes = &bytes[k..],
            // The device may close before taking everything.
            Err(_) => return,
        }
    }
}

/// One unsealed frame's header, or None if the connection closed.
fn raw_recv(tcp: &mut VirtualTcp<'_>) -> Option<Header<'static>> {
    let mut rd = FrameReader::new(tcp, vec![0u8; 2048], vec![0u8; 1], Limits::HANDSHAKE);
    let h = rd.read_frame().ok()?.header.to_vec();
    rd.skip_body().ok()?;
    let h: &'static [u8] = Box::leak(h.into_boxed_slice());
    Some(Header::parse(h).expect("the device sent a valid header"))
}

fn closed(tcp: &mut VirtualTcp<'_>) -> bool {
    let mut b = [0u8; 64];
    matches!(embedded_io::Read::read(tcp, &mut b), Ok(0) | Err(_))
}

/// What an unsealed connection got: its first frame, then whether it closed.
fn check_raw(name: &str, tcp: &mut VirtualTcp<'_>, want: Expect) {
    match want {
        Fatal(id, code) => {
            let h = raw_recv(tcp).unwrap_or_else(|| panic!("{name}: no reply"));
            match h.message {
                Message::Error { code: got, .. } => {
                    assert_eq!((h.request_id, got), (id, code), "{name}")
                }
                m => panic!("{name}: expected Error {code}, got {m:?}"),
            }
            assert!(closed(tcp), "{name}: the connection stayed open");
        }
        Closed => assert!(raw_recv(tcp).is_none(), "{name}: a reply to a cut frame"),
        other => panic!("{name}: {other:?} is not an unsealed-stage expectation"),
    }
}

/// Serve a well-behaved client, and check the store did not change.
fn after(name: &str, n: &mut VirtualNet, baseline: &[(String, u64, [u8; 32])]) {
    // Past any back-off a wrong key caused.
    n.advance(Duration::from_millis(1500));
    let mut c = connect(n);
    assert_eq!(c.ping(77).unwrap(), 77, "{name}: not served afterwards");
    assert_eq!(snapshot(&mut c), baseline, "{name}: the store changed");
    let mem = String::from_utf8(c.exec(&["mem"]).unwrap().stdout).unwrap();
    assert!(
        mem.contains(" 0 upload(s)"),
        "{name}: an upload was left: {mem}"
    );
}

// ---- the cases ----

/// Stage 1: bytes on a fresh connection (before Hello). `true`: the client
/// then closes its side.
fn raw_cases() -> Vec<(&'static str, Vec<u8>, bool, Expect)> {
    let hello_frame = good_hello();
    let mut bad_crc = hello_frame.clone();
    bad_crc[14] ^= 1;
    let mut bad_header = hello_frame.clone();
    bad_header[PREFIX_LEN + 5] ^= 0x40;
    let hello_hdr = hb(Header::new(0, Message::Hello(hello_struct())));
    let mut trailing = hello_hdr.clone();
    trailing.push(0);
    let ping = hb(Header::new(1, Message::Ping { stamp: 1 }));
    let mut unknown = ping.clone();
    unknown[1] = 99;
    let low = Hello {
        max_chunk: 10,
        ..hello(Caps::AUTH_PSK.union(Caps::SEAL))
    };
    let v0 = Hello {
        version: 0,
        ..hello(Caps::AUTH_PSK.union(Caps::SEAL))
    };
    vec![
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            false,
            Fatal(0, ErrorCode::BAD_FRAME),
        ),
        (
            "a TLS ClientHello",
            vec![0x16, 3, 1, 0, 0x2e, 1, 0, 0, 0x2a],
            false,
            Fatal(0, ErrorCode::BAD_FRAME),
        ),
        (
            "wrong second magic byte",
            b"TX\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec(),
            false,
            Fatal(0, ErrorCode::BAD_FRAME),
        ),
        (
            "version 0",
            raw(0, 0, &hello_hdr, 0, &[]),
            false,
            Fatal(0, ErrorCode::UNSUPPORTED_VERSION),
        ),
        (
            "version 2",
            raw(2, 0, &hello_hdr, 0, &[]),
            false,
            Fatal(0, ErrorCode::UNSUPPORTED_VERSION),
        ),
        (
            "version 255",
            raw(255, 0, &hello_hdr, 0, &[]),
            false,
            Fatal(0, ErrorCode::UNSUPPORTED_VERSION),
        ),
        (
            "reserved flag bit 1",
            raw(1, 0x02, &hello_hdr, 0, &[]),
            false,
            Fatal(0, ErrorCode::UNKNOWN_FLAGS),
        ),
        (
            "all flag bits",
            raw(1, 0xff, &hello_hdr, 0, &[]),
            false,
            Fatal(0, ErrorCode::UNKNOWN_FLAGS),
        ),
        (
            "header length 0",
            prefix_only(0, 0),
            false,
            Fatal(0, ErrorCode::BAD_FRAME),
        ),
        (
            "checksum mismatch",
            bad_crc,
            false,
            Fatal(0, ErrorCode::BAD_FRAME),
        ),
        (
            "header bit flipped",
            bad_header,
            false,
            Fatal(0, ErrorCode::BAD_FRAME),
        ),
        (
            "header length one past the limit (513)",
            prefix_only(513, 0),
            false,
            Fatal(0, ErrorCode::HEADER_TOO_LARGE),
        ),
        (
            "header length 65535",
            prefix_only(u16::MAX, 0),
            false,
            Fatal(0, ErrorCode::HEADER_TOO_LARGE),
        ),
        (
            "header length at the limit (512), not a header",
            raw(1, 0, &[0u8; 512], 0, &[]),
            false,
            Fatal(0, ErrorCode::INVALID_HEADER),
        ),
        (
            "a body length that lies (2^63)",
            prefix_only(6, 1 << 63),
            false,
            Fatal(0, ErrorCode::BODY_TOO_LARGE),
        ),
        (
            "body one past the handshake limit (513)",
            prefix_only(6, 513),
            false,
            Fatal(0, ErrorCode::BODY_TOO_LARGE),
        ),
        (
            "prefix cut short, then closed",
            hello_frame[..10].to_vec(),
            true,
            Closed,
        ),
        (
            "header cut short, then closed",
            hello_frame[..PREFIX_LEN + 4].to_vec(),
            true,
            Closed,
        ),
        (
            "Hello with a body",
            raw(1, 0, &hello_hdr, 3, b"abc"),
            false,
            Fatal(0, ErrorCode::UNEXPECTED),
        ),
        (
            "Hello of version 0",
            enc(Header::new(0, Message::Hello(v0)), &[]),
            false,
            Fatal(0, ErrorCode::UNSUPPORTED_VERSION),
        ),
        (
            "Hello with a 10-byte chunk limit",
            enc(Header::new(0, Message::Hello(low)), &[]),
            false,
            Fatal(0, ErrorCode::BAD_LENGTH),
        ),
        (
            "a request before Hello",
            enc(Header::new(1, Message::Ping { stamp: 1 }), &[]),
            false,
            Fatal(0, ErrorCode::UNEXPECTED),
        ),
        (
            "an unknown kind before Hello",
            raw(1, 0, &unknown, 0, &[]),
            false,
            Fatal(0, ErrorCode::UNKNOWN_KIND),
        ),
        (
            "Hello cut inside its fields (invalid postcard)",
            raw(1, 0, &hello_hdr[..hello_hdr.len() - 3], 0, &[]),
            false,
            Fatal(0, ErrorCode::INVALID_HEADER),
        ),
        (
            "Hello with a trailing byte",
            raw(1, 0, &trailing, 0, &[]),
            false,
            Fatal(0, ErrorCode::INVALID_HEADER),
        ),
        (
            "Hello without a key (no AUTH_PSK)",
            enc(Header::new(0, Message::Hello(hello(Caps::empty()))), &[]),
            false,
            Fatal(0, ErrorCode::AUTH_REQUIRED),
        ),
        (
            "Hello with AUTH_PSK but no SEAL",
            enc(Header::new(0, Message::Hello(hello(Caps::AUTH_PSK))), &[]),
            false,
            Fatal(0, ErrorCode::AUTH_REQUIRED),
        ),
    ]
}

fn hello_struct() -> Hello<'static> {
    hello(Caps::AUTH_PSK.union(Caps::SEAL))
}

/// Stage 2: after HelloAck, before Auth.
fn pre_auth_cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let mut unknown = hb(Header::new(9, Message::Ping { stamp: 1 }));
    unknown[1] = 99;
    let mut sealed_auth = raw(
        1,
        1,
        &hb(Header::new(0, Message::Auth(Proof { mac: [1; 32] }))),
        0,
        &[],
    );
    sealed_auth.extend([0x5a; TAG_LEN]);
    vec![
        (
            "Ping before Auth",
            enc(Header::new(5, Message::Ping { stamp: 1 }), &[]),
            Fatal(5, ErrorCode::AUTH_REQUIRED),
        ),
        (
            "Exec before Auth",
            raw(
                1,
                0,
                &{
                    let mut h = exec(&["led", "on"]);
                    h[0] = 6;
                    h
                },
                0,
                &[],
            ),
            Fatal(6, ErrorCode::AUTH_REQUIRED),
        ),
        (
            "Put before Auth",
            enc(
                Header::new(
                    7,
                    Message::Put {
                        path: "x",
                        size: 1,
                        force: true,
                        resume: false,
                    },
                ),
                &[],
            ),
            Fatal(7, ErrorCode::AUTH_REQUIRED),
        ),
        (
            "Get before Auth",
            enc(
                Header::new(
                    8,
                    Message::Get {
                        path: "keep.bin",
                        offset: 0,
                    },
                ),
                &[],
            ),
            Fatal(8, ErrorCode::AUTH_REQUIRED),
        ),
        (
            "an unknown kind before Auth",
            raw(1, 0, &unknown, 0, &[]),
            Fatal(9, ErrorCode::AUTH_REQUIRED),
        ),
        (
            "Auth with a wrong proof",
            enc(
                Header::new(0, Message::Auth(Proof { mac: [0x66; 32] })),
                &[],
            ),
            Fatal(0, ErrorCode::AUTH_FAILED),
        ),
        (
            "Auth with a body",
            enc(
                Header::new(0, Message::Auth(Proof { mac: [0; 32] })),
                b"xyz",
            ),
            Fatal(0, ErrorCode::AUTH_REQUIRED),
        ),
        (
            "a sealed Auth",
            sealed_auth,
            Fatal(0, ErrorCode::AUTH_REQUIRED),
        ),
        (
            "AuthOk from the client",
            enc(Header::new(0, Message::AuthOk(Proof { mac: [0; 32] })), &[]),
            Fatal(0, ErrorCode::AUTH_REQUIRED),
        ),
        (
            "Hello again",
            good_hello(),
            Fatal(0, ErrorCode::AUTH_REQUIRED),
        ),
        (
            "header past the negotiated limit (513)",
            prefix_only(513, 0),
            Fatal(0, ErrorCode::HEADER_TOO_LARGE),
        ),
        (
            "body past the negotiated chunk (1025)",
            prefix_only(2, 1025),
            Fatal(0, ErrorCode::BODY_TOO_LARGE),
        ),
    ]
}

type Sealed = fn(&mut Client<VirtualTcp<'_>>) -> Vec<u8>;

fn seal(c: &mut Client<VirtualTcp<'_>>, h: Header<'_>, body: &[u8]) -> Vec<u8> {
    c.seal_frame(&h, body).unwrap()
}

/// A sealed frame around raw header bytes (which need not parse).
fn seal_raw(c: &mut Client<VirtualTcp<'_>>, header: &[u8], body: &[u8]) -> Vec<u8> {
    let f = raw(1, 1, header, body.len() as u64, &[]);
    c.seal_head(&f, body).unwrap()
}

/// Put `name` as request `id` and wait for PutReady.
fn start_put(c: &mut Client<VirtualTcp<'_>>, id: u32, name: &str, size: u64) {
    c.send(
        &Header::new(
            id,
            Message::Put {
                path: name,
                size,
                force: false,
                resume: false,
            },
        ),
        &[],
    )
    .unwrap();
    let r = c.expect(id).unwrap();
    assert!(matches!(
        r.parse().unwrap().message,
        Message::PutReady { .. }
    ));
}

fn sealed_cases() -> Vec<(&'static str, Sealed, Expect)> {
    fn v(name: &'static str, f: Sealed, e: Expect) -> (&'static str, Sealed, Expect) {
        (name, f, e)
    }
    vec![
        v(
            "an unsealed frame after Auth",
            |_| enc(Header::new(1, Message::Ping { stamp: 1 }), &[]),
            Fatal(0, ErrorCode::INTEGRITY),
        ),
        v(
            "a replayed frame",
            |c| {
                let f = seal(c, Header::new(1, Message::Ping { stamp: 1 }), &[]);
                c.send_raw(&f).unwrap();
                assert!(matches!(
                    c.recv().unwrap().parse().unwrap().message,
                    Message::Pong { .. }
                ));
                f
            },
            Fatal(0, ErrorCode::INTEGRITY),
        ),
        v(
            "two frames reordered",
            |c| {
                let a = seal(c, Header::new(1, Message::Remove { path: "keep.bin" }), &[]);
                let mut b = seal(c, Header::new(2, Message::Ping { stamp: 2 }), &[]);
                b.extend(a);
                b
            },
            Fatal(0, ErrorCode::INTEGRITY),
        ),
        v(
            "a frame dropped",
            |c| {
                let _lost = seal(c, Header::new(1, Message::Ping { stamp: 1 }), &[]);
                seal(c, Header::new(2, Message::Remove { path: "keep.bin" }), &[])
            },
            Fatal(0, ErrorCode::INTEGRITY),
        ),
        v(
            "a body bit flipped",
            |c| {
                start_put(c, 3, "flip.bin", 4);
                let mut f = seal(c, Header::new(3, Message::Data), b"data");
                let i = f.len() - TAG_LEN - 2;
                f[i] ^= 1;
                f
            },
            Fatal(0, ErrorCode::INTEGRITY),
        ),
        v(
            "a header bit flipped, checksum fixed",
            |c| {
                let f = seal(c, Header::new(1, Message::Remove { path: "keep.bin" }), &[]);
                let hl = usize::from(f[4]);
                let mut h = f[PREFIX_LEN..PREFIX_LEN + hl].to_vec();
                h[hl - 1] ^= 0x01; // keep.bin -> keep.bio
                let mut g = raw(1, 1, &h, 0, &[]);
                g.extend_from_slice(&f[f.len() - TAG_LEN..]);
                g
            },
            Fatal(0, ErrorCode::INTEGRITY),
        ),
        v(
            "a tag bit flipped",
            |c| {
                let mut f = seal(c, Header::new(1, Message::Ping { stamp: 1 }), &[]);
                let n = f.len();
                f[n - 1] ^= 0x80;
                f
            },
            Fatal(0, ErrorCode::INTEGRITY),
        ),
        v(
            "the SEALED flag cleared, checksum fixed",
            |c| {
                let f = seal(c, Header::new(1, Message::Ping { stamp: 1 }), &[]);
                let hl = usize::from(f[4]);
                raw(1, 0, &f[PREFIX_LEN..PREFIX_LEN + hl], 0, &[])
            },
            Fatal(0, ErrorCode::INTEGRITY),
        ),
        v(
            "a frame sealed with another key",
            |_| {
                let mut other = Sealer::new([9; 32]);
                let mut f = enc(Header::new(1, Message::Ping { stamp: 1 }), &[]);
                f[3] = 1;
                let hl = usize::from(f[4]);
                let h = f[PREFIX_LEN..PREFIX_LEN + hl].to_vec();
                let mut g = raw(1, 1, &h, 0, &[]);
                let tag = other.begin(&g).finish();
                g.extend(tag);
                g
            },
            Fatal(0, ErrorCode::INTEGRITY),
        ),
        v(
            "a tag cut short by the next frame",
            |c| {
                let mut f = seal(c, Header::new(1, Message::Ping { stamp: 1 }), &[]);
                f.truncate(f.len() - 6);
                let g = seal(c, Header::new(2, Message::Ping { stamp: 2 }), &[]);
                f.extend(g);
                f
            },
            Fatal(0, ErrorCode::INTEGRITY),
        ),
        v(
            "an unknown kind",
            |c| {
                let mut h = hb(Header::new(40, Message::Ping { stamp: 1 }));
                h[1] = 99;
                seal_raw(c, &h, &[])
            },
            Error(40, ErrorCode::UNKNOWN_KIND),
        ),
        v(
            "a kind number past u32 (invalid postcard)",
            |c| seal_raw(c, &[41, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &[]),
            Error(41, ErrorCode::INVALID_HEADER),
        ),
        v(
            "a path that is not UTF-8",
            |c| seal_raw(c, &[42, 14, 2, 0xc3, 0x28], &[]),
            Error(42, ErrorCode::INVALID_HEADER),
        ),
        v(
            "an overlong varint",
            |c| seal_raw(c, &[0x80 | 43, 0x00, 4, 1], &[]),
            Error(43, ErrorCode::INVALID_HEADER),
        ),
        v(
            "a trailing byte",
            |c| {
                let mut h = hb(Header::new(44, Message::Ping { stamp: 1 }));
                h.push(0);
                seal_raw(c, &h, &[])
            },
            Error(44, ErrorCode::INVALID_HEADER),
        ),
        v(
            "a body on a Ping",
            |c| seal(c, Header::new(45, Message::Ping { stamp: 1 }), b"junk"),
            Error(45, ErrorCode::UNEXPECTED),
        ),
        v(
            "header at the negotiated limit (512)",
            |c| {
                let text = "x".repeat(512 - 4);
                seal(c, Header::new(46, Message::Echo { text: &text }), &[])
            },
            Served(tether_proto::Kind::EchoReply),
        ),
        v(
            "header one past the limit (513)",
            |c| {
                let text = "x".repeat(513 - 4);
                seal(c, Header::new(47, Message::Echo { text: &text }), &[])
            },
            Fatal(0, ErrorCode::HEADER_TOO_LARGE),
        ),
        v(
            "a body length that lies (2^63)",
            |_| prefix_only(2, 1 << 63),
            Fatal(0, ErrorCode::BODY_TOO_LARGE),
        ),
        v(
            "a body one past the chunk (1025)",
            |c| seal(c, Header::new(48, Message::Data), &[0; 1025]),
            Fatal(0, ErrorCode::BODY_TOO_LARGE),
        ),
        v(
            "Data for no upload",
            |c| seal(c, Header::new(49, Message::Data), b"abc"),
            Error(49, ErrorCode::BAD_REQUEST_ID),
        ),
        v(
            "Done for no upload",
            |c| {
                seal(
                    c,
                    Header::new(
                        50,
                        Message::Done {
                            bytes: 0,
                            sha256: None,
                        },
                    ),
                    &[],
                )
            },
            Error(50, ErrorCode::BAD_REQUEST_ID),
        ),
        v(
            "Data with a wrong request id during a Put",
            |c| {
                start_put(c, 51, "wrongid.bin", 3);
                seal(c, Header::new(52, Message::Data), b"abc")
            },
            Error(52, ErrorCode::BAD_REQUEST_ID),
        ),
        v(
            "Cancel of an unknown request",
            |c| seal(c, Header::new(53, Message::Cancel { target: 999 }), &[]),
            Ignored,
        ),
        v(
            "an Error frame for no request",
            |c| {
                seal(
                    c,
                    Header::new(
                        54,
                        Message::Error {
                            code: ErrorCode::IO,
                            message: "?",
                        },
                    ),
                    &[],
                )
            },
            Error(54, ErrorCode::UNEXPECTED),
        ),
        v(
            "a reply kind (Pong)",
            |c| seal(c, Header::new(55, Message::Pong { stamp: 1 }), &[]),
            Error(55, ErrorCode::UNEXPECTED),
        ),
        v(
            "Hello after Auth",
            |c| seal(c, Header::new(56, Message::Hello(hello_struct())), &[]),
            Error(56, ErrorCode::UNEXPECTED),
        ),
        v(
            "Auth after Auth",
            |c| {
                seal(
                    c,
                    Header::new(57, Message::Auth(Proof { mac: [0; 32] })),
                    &[],
                )
            },
            Error(57, ErrorCode::UNEXPECTED),
        ),
        v(
            "traversal ../evil",
            |c| {
                seal(
                    c,
                    Header::new(
                        58,
                        Message::Put {
                            path: "../evil",
                            size: 1,
                            force: true,
                            resume: false,
                        },
                    ),
                    &[],
                )
            },
            Error(58, ErrorCode::PATH_REFUSED),
        ),
        v(
            "traversal a/../../etc/passwd",
            |c| {
                seal(
                    c,
                    Header::new(
                        59,
                        Message::Get {
                            path: "a/../../etc/passwd",
                            offset: 0,
                        },
                    ),
                    &[],
                )
            },
            Error(59, ErrorCode::PATH_REFUSED),
        ),
        v(
            "absolute /etc/passwd",
            |c| {
                seal(
                    c,
                    Header::new(
                        60,
                        Message::Get {
                            path: "/etc/passwd",
                            offset: 0,
                        },
                    ),
                    &[],
                )
            },
            Error(60, ErrorCode::PATH_REFUSED),
        ),
        v(
            "..",
            |c| seal(c, Header::new(61, Message::Stat { path: ".." }), &[]),
            Error(61, ErrorCode::PATH_REFUSED),
        ),
        v(
            "./../x",
            |c| seal(c, Header::new(62, Message::Remove { path: "./../x" }), &[]),
            Error(62, ErrorCode::PATH_REFUSED),
        ),
        v(
            "a subdirectory sub/keep.bin",
            |c| {
                seal(
                    c,
                    Header::new(
                        63,
                        Message::Remove {
                            path: "sub/keep.bin",
                        },
                    ),
                    &[],
                )
            },
            Error(63, ErrorCode::PATH_REFUSED),
        ),
        v(
            "a NUL in the name",
            |c| {
                seal(
                    c,
                    Header::new(
                        64,
                        Message::Put {
                            path: "a\0b",
                            size: 1,
                            force: true,
                            resume: false,
                        },
                    ),
                    &[],
                )
            },
            Error(64, ErrorCode::PATH_REFUSED),
        ),
        v(
            "a newline in the name",
            |c| {
                seal(
                    c,
                    Header::new(65, Message::Stat { path: "keep.bin\n" }),
                    &[],
                )
            },
            Error(65, ErrorCode::PATH_REFUSED),
        ),
        v(
            "encoded separators ..%2f..%2fetc%2fpasswd (a flat name)",
            |c| {
                seal(
                    c,
                    Header::new(
                        66,
                        Message::Get {
                            path: "..%2f..%2fetc%2fpasswd",
                            offset: 0,
                        },
                    ),
                    &[],
                )
            },
            Error(66, ErrorCode::NOT_FOUND),
        ),
        v(
            "backslashes ..\\..\\x (a flat name)",
            |c| seal(c, Header::new(67, Message::Stat { path: "..\\..\\x" }), &[]),
            Error(67, ErrorCode::PATH_REFUSED),
        ),
        v(
            "a 49-byte name (past the store's 48)",
            |c| {
                let name = "n".repeat(49);
                seal(
                    c,
                    Header::new(
                        68,
                        Message::Put {
                            path: &name,
                            size: 1,
                            force: true,
                            resume: false,
                        },
                    ),
                    &[],
                )
            },
            Error(68, ErrorCode::PATH_REFUSED),
        ),
        v(
            "a 400-byte name",
            |c| {
                let name = "n".repeat(400);
                seal(c, Header::new(69, Message::Stat { path: &name }), &[])
            },
            Error(69, ErrorCode::PATH_REFUSED),
        ),
        v(
            "a Put larger than the store",
            |c| {
                seal(
                    c,
                    Header::new(
                        70,
                        Message::Put {
                            path: "huge",
                            size: 1 << 40,
                            force: true,
                            resume: false,
                        },
                    ),
                    &[],
                )
            },
            Error(70, ErrorCode::NO_SPACE),
        ),
        v(
            "a Put whose digest is wrong",
            |c| {
                start_put(c, 71, "digest.bin", 3);
                let mut f = seal(c, Header::new(71, Message::Data), b"abc");
                f.extend(seal(
                    c,
                    Header::new(
                        71,
                        Message::Done {
                            bytes: 3,
                            sha256: Some([0; 32]),
                        },
                    ),
                    &[],
                ));
                f
            },
            Error(71, ErrorCode::DIGEST_MISMATCH),
        ),
        v(
            "a Put with more data than announced",
            |c| {
                start_put(c, 72, "long.bin", 2);
                seal(c, Header::new(72, Message::Data), b"abc")
            },
            Error(72, ErrorCode::BAD_LENGTH),
        ),
        v(
            "a Put with less data than announced",
            |c| {
                start_put(c, 73, "short.bin", 5);
                let mut f = seal(c, Header::new(73, Message::Data), b"abc");
                let d: [u8; 32] = Sha256::digest(b"abc").into();
                f.extend(seal(
                    c,
                    Header::new(
                        73,
                        Message::Done {
                            bytes: 5,
                            sha256: Some(d),
                        },
                    ),
                    &[],
                ));
                f
            },
            Error(73, ErrorCode::BAD_LENGTH),
        ),
        v(
            "a Put whose Done has no digest",
            |c| {
                start_put(c, 74, "nodigest.bin", 3);
                let mut f = seal(c, Header::new(74, Message::Data), b"abc");
                f.extend(seal(
                    c,
                    Header::new(
                        74,
                        Message::Done {
                            bytes: 3,
                            sha256: None,
                        },
                    ),
                    &[],
                ));
                f
            },
            Error(74, ErrorCode::DIGEST_MISMATCH),
        ),
        v(
            "a Put over an existing file without force",
            |c| {
                seal(
                    c,
                    Header::new(
                        75,
                        Message::Put {
                            path: "keep.bin",
                            size: 1,
                            force: false,
                            resume: false,
                        },
                    ),
                    &[],
                )
            },
            Error(75, ErrorCode::EXISTS),
        ),
        v(
            "a Put to the root",
            |c| {
                seal(
                    c,
                    Header::new(
                        76,
                        Message::Put {
                            path: ".",
                            size: 1,
                            force: true,
                            resume: false,
                        },
                    ),
                    &[],
                )
            },
            Error(76, ErrorCode::IS_DIRECTORY),
        ),
        v(
            "an unknown command",
            |c| {
                let mut h = exec(&["rm", "-rf", "/"]);
                h[0] = 77;
                seal_raw(c, &h, &[])
            },
            Error(77, ErrorCode::EXEC_FAILED),
        ),
        v(
            "an empty command",
            |c| {
                let mut h = exec(&[""]);
                h[0] = 78;
                seal_raw(c, &h, &[])
            },
            Error(78, ErrorCode::EXEC_FAILED),
        ),
        v(
            "17 arguments",
            |c| {
                let mut h = exec(&["echo"; 17]);
                h[0] = 79;
                seal_raw(c, &h, &[])
            },
            Error(79, ErrorCode::TOO_LARGE),
        ),
        v(
            "Get of the root",
            |c| {
                seal(
                    c,
                    Header::new(
                        80,
                        Message::Get {
                            path: "",
                            offset: 0,
                        },
                    ),
                    &[],
                )
            },
            Error(80, ErrorCode::IS_DIRECTORY),
        ),
        v(
            "List of a file",
            |c| seal(c, Header::new(81, Message::List { path: "keep.bin" }), &[]),
            Error(81, ErrorCode::NOT_DIRECTORY),
        ),
        v(
            "Remove of the root",
            |c| seal(c, Header::new(82, Message::Remove { path: "." }), &[]),
            Error(82, ErrorCode::PATH_REFUSED),
        ),
        v(
            "Get of a missing file",
            |c| {
                seal(
                    c,
                    Header::new(
                        83,
                        Message::Get {
                            path: "nope",
                            offset: 0,
                        },
                    ),
                    &[],
                )
            },
            Error(83, ErrorCode::NOT_FOUND),
        ),
        v(
            "a time format too long",
            |c| {
                let f = "%Y".repeat(100);
                seal(c, Header::new(84, Message::Time { format: &f }), &[])
            },
            Error(84, ErrorCode::TOO_LARGE),
        ),
        v(
            "more requests than max_requests",
            |c| {
                let get = |c: &mut Client<VirtualTcp<'_>>, id| {
                    seal(
                        c,
                        Header::new(
                            id,
                            Message::Get {
                                path: "keep.bin",
                                offset: 0,
                            },
                        ),
                        &[],
                    )
                };
                let mut f = get(c, 85);
                f.extend(get(c, 86));
                f.extend(seal(
                    c,
                    Header::new(87, Message::Stat { path: "keep.bin" }),
                    &[],
                ));
                f
            },
            Error(87, ErrorCode::BUSY),
        ),
    ]
}

#[test]
fn hostile_inputs_get_exact_errors_and_change_nothing() {
    let mut n = keyed_net();
    let baseline = {
        let mut c = connect(&mut n);
        c.put("keep.bin", &keep(), false).unwrap();
        c.put("exists.bin", b"0123456789", false).unwrap();
        snapshot(&mut c)
    };
    let mut count = 0;

    for (name, bytes, close_after, want) in raw_cases() {
        {
            let mut tcp = n.connect().unwrap();
            raw_send(&mut tcp, &bytes);
            if close_after {
                tcp.shutdown();
            }
            check_raw(name, &mut tcp, want);
        }
        after(name, &mut n, &baseline);
        count += 1;
    }

    for (name, bytes, want) in pre_auth_cases() {
        {
            let mut tcp = n.connect().unwrap();
            let hs = ClientHandshake::new(Some(KEY), [3; 16], 4096, 4096, Caps::empty(), "h");
            raw_send(
                &mut tcp,
                &enc(Header::new(0, Message::Hello(hs.hello().clone())), &[]),
            );
            let ack = raw_recv(&mut tcp).expect("HelloAck");
            assert!(matches!(ack.message, Message::HelloAck(_)), "{name}");
            raw_send(&mut tcp, &bytes);
            check_raw(name, &mut tcp, want);
        }
        assert!(n.device.led_log.is_empty(), "{name}: a command ran");
        after(name, &mut n, &baseline);
        count += 1;
    }

    for (name, make, want) in sealed_cases() {
        {
            let mut c = connect(&mut n);
            let bytes = make(&mut c);
            c.send_raw(&bytes).unwrap();
            check_sealed(name, &mut c, want);
        }
        after(name, &mut n, &baseline);
        count += 1;
    }
    assert!(count >= 50, "{count} cases");
    let s = n.device.dev.stats();
    println!(
        "{count} hostile inputs: {} errors sent, {} bad frames, {} failed auth, {} integrity failures",
        s.errors_sent, s.bad_frames, s.auth_failures, s.integrity_failures
    );
}

/// What a sealed session got: the expected frame (skipping other requests'
/// frames, e.g. the Data of a running Get), then closed or still served.
fn check_sealed(name: &str, c: &mut Client<VirtualTcp<'_>>, want: Expect) {
    let (id, code) = match want {
        Fatal(id, code) | Error(id, code) => (Some(id), Some(code)),
        Served(_) | Ignored => (None, None),
        Closed => panic!("{name}: not a sealed-stage expectation"),
    };
    if let (Some(id), Some(code)) = (id, code) {
        loop {
            let r = c
                .recv()
                .unwrap_or_else(|e| panic!("{name}: no Error {code}: {e}"));
            let h = r.parse().unwrap();
            if let Message::Error { code: got, .. } = h.message {
                assert_eq!((h.request_id, got), (id, code), "{name}");
                break;
            }
        }
    }
    if let Served(kind) = want {
        let r = c.recv().unwrap();
        assert_eq!(r.parse().unwrap().message.kind(), kind, "{name}");
    }
    match want {
        Fatal(..) => assert!(c.recv().is_err(), "{name}: the connection stayed open"),
        _ => {
            // Still served on the same connection: a Ping's Pong arrives
            // (after whatever a running request still sends), no Error.
            let id = 1000;
            c.send(&Header::new(id, Message::Ping { stamp: 5 }), &[])
                .unwrap();
            loop {
                let r = c.recv().unwrap_or_else(|e| panic!("{name}: {e}"));
                let h = r.parse().unwrap();
                match h.message {
                    Message::Pong { stamp: 5 } if h.request_id == id => break,
                    Message::Error { code, .. } => {
                        panic!("{name}: unexpected Error {code} for {}", h.request_id)
                    }
                    _ => {}
                }
            }
        }
    }
}

//! What the cases are made of: frames and headers, and the steps scripts
//! share (read a reply, upload, download).

use sha2::{Digest as _, Sha256};
use tether_proto::handshake::ClientHandshake;
use tether_proto::{Argv, Caps, Command, Exec, Hello, Kind, Message};

use super::{Act, Observed};
use crate::peer::{header, prefix, raw_frame, Got, Peer, RecvError};

/// The request id of the uploads scripts make.
pub const PUT_ID: u32 = 40;
/// The request id of the downloads scripts make.
pub const GET_ID: u32 = 41;

/// SHA-256 of `b`.
pub fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// The next frame, or `Closed` when the server closed (or reset).
pub fn recv(p: &mut Peer<'_>) -> Result<Observed, String> {
    match p.recv() {
        Ok(g) => Ok(Observed::Frame(g)),
        Err(RecvError::Closed) | Err(RecvError::Eof) => Ok(Observed::Closed),
        Err(RecvError::Io(e)) if e.contains("reset") => Ok(Observed::Closed),
        Err(e) => Err(format!("reading the reply: {e:?}")),
    }
}

/// Read one frame; `Ok(Err(observed))` when it is not a `kind` of `id`
/// (an Error, or the end), which the script then reports.
pub fn want(p: &mut Peer<'_>, id: u32, kind: Kind) -> Result<Result<Got, Observed>, String> {
    match recv(p)? {
        Observed::Frame(g) if g.id == id && g.kind() == kind => {
            if p.sealed() && g.tag_ok != Some(true) {
                return Err(format!("{} did not verify", g.describe()));
            }
            Ok(Ok(g))
        }
        other => Ok(Err(other)),
    }
}

/// Like [`want`], for a reply that must come: anything else is the
/// script's failure.
pub fn must(p: &mut Peer<'_>, id: u32, kind: Kind) -> Result<Got, String> {
    want(p, id, kind)?.map_err(|o| format!("expected {kind:?} {id}, got {o:?}"))
}

/// A Put of `size` bytes to `path` as request `id`.
pub fn put_msg(path: &str, size: u64) -> Message<'_> {
    Message::Put {
        path,
        size,
        force: false,
        resume: false,
    }
}

/// Start an upload; `Ok(Err(..))` when it is refused.
pub fn start_put(
    p: &mut Peer<'_>,
    id: u32,
    path: &str,
    size: u64,
) -> Result<Result<(), Observed>, String> {
    p.request(id, put_msg(path, size), &[])?;
    Ok(want(p, id, Kind::PutReady)?.map(|_| ()))
}

/// Upload `data` to `path` announcing `size`, sending Done with `bytes`
/// and `digest`; returns what ends the request.
pub fn put_with(
    p: &mut Peer<'_>,
    path: &str,
    size: u64,
    data: &[u8],
    bytes: u64,
    digest: Option<[u8; 32]>,
) -> Result<Observed, String> {
    let id = PUT_ID;
    if let Err(o) = start_put(p, id, path, size)? {
        return Ok(o);
    }
    for c in data.chunks(p.max_chunk as usize) {
        p.request(id, Message::Data, c)?;
    }
    let sha256 = digest;
    p.request(id, Message::Done { bytes, sha256 }, &[])?;
    match want(p, id, Kind::Done)? {
        Ok(g) => match g.message() {
            Message::Done {
                bytes: b,
                sha256: Some(d),
            } if b == data.len() as u64 && d == sha(data) => Ok(Observed::Done),
            m => Err(format!("the server confirmed {m:?}")),
        },
        Err(o) => Ok(o),
    }
}

/// Upload `data` to `path` correctly.
pub fn put(p: &mut Peer<'_>, path: &str, data: &[u8]) -> Result<Observed, String> {
    let n = data.len() as u64;
    put_with(p, path, n, data, n, Some(sha(data)))
}

/// Download `path`, requiring exactly `expect` (checked against the digest too).
pub fn get_exact(p: &mut Peer<'_>, path: &str, expect: &[u8]) -> Result<Observed, String> {
    let id = GET_ID;
    p.request(id, Message::Get { path, offset: 0 }, &[])?;
    if let Err(o) = want(p, id, Kind::FileInfo)? {
        return Ok(o);
    }
    let mut got = Vec::new();
    loop {
        let g = p.recv_checked()?;
        if g.id != id {
            return Err(format!("unexpected {}", g.describe()));
        }
        match g.message() {
            Message::Data => got.extend_from_slice(&g.body),
            Message::Done {
                bytes,
                sha256: Some(d),
            } => {
                if got != expect || bytes != expect.len() as u64 || d != sha(expect) {
                    return Err(format!(
                        "get {path}: {} bytes (Done says {bytes}), expected {}",
                        got.len(),
                        expect.len()
                    ));
                }
                return Ok(Observed::Done);
            }
            _ => return Ok(Observed::Frame(g)),
        }
    }
}

/// Upload `data`, then download it again: byte-exact both ways.
pub fn round_trip(p: &mut Peer<'_>, path: &str, data: &[u8]) -> Result<Observed, String> {
    match put(p, path, data)? {
        Observed::Done => get_exact(p, path, data),
        o => Ok(o),
    }
}

/// Send one request and read what comes first.
pub fn ask(p: &mut Peer<'_>, id: u32, m: Message<'_>) -> Result<Observed, String> {
    p.request(id, m, &[])?;
    recv(p)
}

/// These frames, built by the session.
pub fn frames(list: Vec<(u32, Message<'_>, Vec<u8>)>) -> Act {
    Act::Frames(
        list.into_iter()
            .map(|(id, m, body)| (header(id, m), body))
            .collect(),
    )
}

/// One body-less frame, built by the session.
pub fn one(id: u32, m: Message<'_>) -> Act {
    frames(vec![(id, m, Vec::new())])
}

/// One frame around raw header bytes (which need not parse), built by the session.
pub fn one_raw(header: Vec<u8>) -> Act {
    Act::Frames(vec![(header, Vec::new())])
}

/// The caps a Hello offers: the key's, on every server (an unkeyed server
/// reads no other bit and ignores these).
pub const KEY_CAPS: Caps = Caps::AUTH_PSK.union(Caps::SEAL);

/// A Hello's header with `agent` and `caps`.
pub fn hello_header_caps(agent: &str, caps: Caps) -> Vec<u8> {
    header(
        0,
        Message::Hello(Hello {
            version: 1,
            max_header: 8192,
            max_chunk: 256 * 1024,
            caps,
            nonce: [3; 16],
            agent,
        }),
    )
}

/// A Hello's header offering the key's capabilities.
pub fn hello_header(agent: &str) -> Vec<u8> {
    hello_header_caps(agent, KEY_CAPS)
}

/// A whole Hello frame.
pub fn hello_bytes() -> Vec<u8> {
    raw_frame(&hello_header("conformance"), &[])
}

/// A valid Hello whose header is exactly `len` bytes.
pub fn hello_of_len(len: usize) -> Vec<u8> {
    let base = hello_header("").len();
    let mut n = len.saturating_sub(base + 1);
    loop {
        let h = hello_header(&"a".repeat(n));
        match h.len().cmp(&len) {
            std::cmp::Ordering::Equal => return raw_frame(&h, &[]),
            std::cmp::Ordering::Less => n += 1,
            std::cmp::Ordering::Greater => n -= 1,
        }
    }
}

/// `f` with byte `at` set to `v` (the checksum is not fixed).
pub fn with_byte(mut f: Vec<u8>, at: usize, v: u8) -> Vec<u8> {
    f[at] = v;
    f
}

/// Recompute the checksum of frame `f` whatever its prefix says
/// (CRC-32C over prefix bytes 0..14 and the header), as anyone can.
pub fn fix_crc(f: &mut [u8]) {
    let hl = usize::from(u16::from_le_bytes([f[4], f[5]]));
    let c = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    let mut d = c.digest();
    d.update(&f[..14]);
    d.update(&f[18..18 + hl]);
    f[14..18].copy_from_slice(&d.finalize().to_le_bytes());
}

/// A frame around `header` whose prefix has `version` and `flags`, with a
/// checksum that holds.
pub fn with_prefix(header: &[u8], version: u8, flags: u8) -> Vec<u8> {
    let mut f = raw_frame(header, &[]);
    f[2] = version;
    f[3] = flags;
    fix_crc(&mut f);
    f
}

/// A frame around `header` announcing `body_len`, with `flags`, and `body`.
pub fn frame_with(header: &[u8], body_len: u64, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = prefix(header, body_len, flags);
    f.extend_from_slice(header);
    f.extend_from_slice(body);
    f
}

/// An Exec of `argv` (no timeout).
pub fn exec_msg<'a>(argv: &[&str], buf: &'a mut Vec<u8>) -> Message<'a> {
    let need: usize = argv.iter().map(|a| a.len() + 1).sum();
    buf.resize(need.max(1), 0);
    let a = Argv::join(argv, buf).expect("argv");
    Message::Exec(Exec {
        command: Command::Argv(a),
        timeout_ms: None,
    })
}

/// The header of an Exec of `argv` as request `id`.
pub fn exec_header(id: u32, argv: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    header(id, exec_msg(argv, &mut b))
}

/// Send a Hello (offering authentication when there is a key) and read
/// the HelloAck; stop there.
pub fn hello_ack_only(
    p: &mut Peer<'_>,
    key: Option<[u8; 32]>,
    nonce: [u8; 16],
) -> Result<(), String> {
    let hs = ClientHandshake::new(key, nonce, 8192, 256 * 1024, Caps::empty(), "conformance");
    p.request(0, Message::Hello(hs.hello().clone()), &[])?;
    match want(p, 0, Kind::HelloAck)? {
        Ok(_) => Ok(()),
        Err(o) => Err(format!("no HelloAck: {o:?}")),
    }
}

/// End the uploads `ids` (each answered PutReady, none sent data) with a
/// Done without a digest: each is refused `DIGEST_MISMATCH`, which
/// discards its partial.
pub fn abandon_puts(p: &mut Peer<'_>, ids: impl IntoIterator<Item = u32>) -> Result<(), String> {
    for id in ids {
        p.request(
            id,
            Message::Done {
                bytes: 0,
                sha256: None,
            },
            &[],
        )?;
        let g = p.recv_checked()?;
        match g.error() {
            Some((c, _)) if g.id == id && c == tether_proto::ErrorCode::DIGEST_MISMATCH => {}
            _ => return Err(format!("ending upload {id}: got {}", g.describe())),
        }
    }
    Ok(())
}

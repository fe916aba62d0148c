//! Transfers: empty files and files of one chunk either way, uploads that
//! lie about sizes and digests, that are too large, cut short, or contend
//! for one name (PROTOCOL.md section 2.2, Get and Put).

use tether_proto::{Caps, ErrorCode as C, Kind, Message};

use super::kit::{
    get_exact, must, put, put_with, recv, round_trip, sha, start_put, GET_ID, PUT_ID,
};
use super::Then::Open as Stays;
use super::{case, err, pattern, Act, After, Case, Expect, Fx, Observed, Stage::Open, BOTH, HELLO};
use crate::peer::Peer;

type Res = Result<Observed, String>;

fn s_chunk_up(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    round_trip(p, "chunk-up.bin", &pattern(p.max_chunk as usize, 7))
}

fn s_chunk_plus_one_up(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    round_trip(p, "chunk1-up.bin", &pattern(p.max_chunk as usize + 1, 9))
}

fn s_get_chunk(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    get_exact(p, "chunk.bin", &pattern(p.max_chunk as usize, 1))
}

fn s_more_data_than_announced(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    // No Done: the Data past the size is refused at once.
    if let Err(o) = start_put(p, 72, "long.bin", 2)? {
        return Ok(o);
    }
    p.request(72, Message::Data, b"abc")?;
    recv(p)
}

fn s_wrong_id_during_put(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    if let Err(o) = start_put(p, 51, "wrong-id.bin", 3)? {
        return Ok(o);
    }
    p.request(52, Message::Data, b"abc")?;
    recv(p)
}

fn s_cut_short(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    if let Err(o) = start_put(p, PUT_ID, "cut.bin", 100)? {
        return Ok(o);
    }
    let f = p.frame(PUT_ID, Message::Data, &[7u8; 100]);
    p.send(&f[..f.len() - 60])?;
    p.close_write();
    recv(p)
}

fn s_concurrent_puts(p: &mut Peer<'_>, fx: &Fx<'_>) -> Res {
    let first = b"first one wins";
    // The first upload: announced, PutReady received, no data yet.
    if let Err(o) = start_put(p, 50, "contended.bin", first.len() as u64)? {
        return Err(format!("the first upload was refused: {o:?}"));
    }
    // A second upload to the same name, on another connection: refused.
    let second = {
        let mut q = fx.connect(0, Open)?;
        put_with(
            &mut q,
            "contended.bin",
            6,
            b"second",
            6,
            Some(sha(b"second")),
        )?
    };
    // The first goes on and lands.
    p.request(50, Message::Data, first)?;
    let sha256 = Some(sha(first));
    p.request(
        50,
        Message::Done {
            bytes: first.len() as u64,
            sha256,
        },
        &[],
    )?;
    must(p, 50, Kind::Done)?;
    match second {
        Observed::Frame(g) => Ok(Observed::Frame(g)),
        o => Err(format!("the second upload was not refused: {o:?}")),
    }
}

fn s_pipelined(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    // Put, Data and Done in one write, before PutReady (no resume: the
    // offset can only be 0).
    let data = b"pipelined";
    let n = data.len() as u64;
    let mut b = p.frame(PUT_ID, super::kit::put_msg("pipelined.bin", n), &[]);
    b.extend(p.frame(PUT_ID, Message::Data, data));
    let sha256 = Some(sha(data));
    b.extend(p.frame(PUT_ID, Message::Done { bytes: n, sha256 }, &[]));
    p.send(&b)?;
    must(p, PUT_ID, Kind::PutReady)?;
    must(p, PUT_ID, Kind::Done)?;
    Ok(Observed::Done)
}

fn s_cancelled_put(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    // Cancelled after PutReady; its Data sent meanwhile is dropped silently.
    if let Err(o) = start_put(p, PUT_ID, "cancelled.bin", 8)? {
        return Ok(o);
    }
    p.request(0, Message::Cancel { target: PUT_ID }, &[])?;
    p.request(PUT_ID, Message::Data, b"1234")?;
    recv(p)
}

fn s_resumed(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    let data = b"resumed upload";
    let n = data.len() as u64;
    if let Err(o) = start_put(p, PUT_ID, "resumed.bin", n)? {
        return Ok(o);
    }
    p.request(PUT_ID, Message::Data, &data[..6])?;
    p.request(0, Message::Cancel { target: PUT_ID }, &[])?;
    match recv(p)? {
        Observed::Frame(g) if g.error().is_some_and(|(c, _)| c == C::CANCELLED) => {}
        o => return Err(format!("the cancelled upload ended with {o:?}")),
    }
    let put = Message::Put {
        path: "resumed.bin",
        size: n,
        force: false,
        resume: true,
    };
    p.request(44, put, &[])?;
    let g = must(p, 44, Kind::PutReady)?;
    match g.message() {
        Message::PutReady {
            offset: 6,
            prefix_sha256: Some(d),
        } if d == sha(&data[..6]) => {}
        m => return Err(format!("not resumed at 6 with the prefix's digest: {m:?}")),
    }
    p.request(44, Message::Data, &data[6..])?;
    let sha256 = Some(sha(data));
    p.request(44, Message::Done { bytes: n, sha256 }, &[])?;
    must(p, 44, Kind::Done)?;
    Ok(Observed::Done)
}

fn s_get_at(p: &mut Peer<'_>, offset: u64, want_offset: u64) -> Res {
    p.request(
        GET_ID,
        Message::Get {
            path: "hello.txt",
            offset,
        },
        &[],
    )?;
    let g = must(p, GET_ID, Kind::FileInfo)?;
    let n = HELLO.len() as u64;
    let prefix = (want_offset > 0).then(|| sha(&HELLO[..want_offset as usize]));
    match g.message() {
        Message::FileInfo {
            size,
            offset: o,
            prefix_sha256,
            ..
        } if size == n && o == want_offset && prefix_sha256 == prefix => {}
        m => return Err(format!("FileInfo: {m:?}")),
    }
    let mut got = Vec::new();
    loop {
        let g = p.recv_checked()?;
        match g.message() {
            Message::Data if g.id == GET_ID => got.extend_from_slice(&g.body),
            Message::Done { bytes, sha256 } if g.id == GET_ID => {
                let ok = bytes == n
                    && sha256 == Some(sha(HELLO))
                    && got == HELLO[want_offset as usize..];
                return if ok {
                    Ok(Observed::Done)
                } else {
                    Err(format!("got {} bytes, Done {bytes}", got.len()))
                };
            }
            _ => return Ok(Observed::Frame(g)),
        }
    }
}

fn s_replace_and_remove(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    if let Observed::Done = put(p, "replaced.txt", b"one")? {
    } else {
        return Err("the first upload failed".into());
    }
    let put = Message::Put {
        path: "replaced.txt",
        size: 3,
        force: true,
        resume: false,
    };
    p.request(45, put, &[])?;
    must(p, 45, Kind::PutReady)?;
    p.request(45, Message::Data, b"two")?;
    p.request(
        45,
        Message::Done {
            bytes: 3,
            sha256: Some(sha(b"two")),
        },
        &[],
    )?;
    must(p, 45, Kind::Done)?;
    if let o @ Observed::Frame(_) = get_exact(p, "replaced.txt", b"two")? {
        return Ok(o);
    }
    p.request(
        46,
        Message::Remove {
            path: "replaced.txt",
        },
        &[],
    )?;
    match must(p, 46, Kind::Done)?.message() {
        Message::Done {
            bytes: 0,
            sha256: None,
        } => Ok(Observed::Done),
        m => Err(format!("Remove answered {m:?}")),
    }
}

/// Every case of this family.
pub fn cases() -> Vec<Case> {
    let mut v = good();
    v.extend(more());
    v.extend(lies());
    v.iter_mut()
        .for_each(|c| c.needs = c.needs.union(Caps::FILES));
    v
}

fn good() -> Vec<Case> {
    let c = |name, s: super::Script| case(name, BOTH, Open, Act::Script(s), Expect::Ok);
    vec![
        c("put an empty file", |p, _| {
            round_trip(p, "empty-up.bin", b"")
        })
        .needs(Caps::WRITE)
        .after(After::Content("empty-up.bin", Vec::new())),
        c("put exactly one chunk", s_chunk_up)
            .needs(Caps::WRITE)
            .after(After::Stored("chunk-up.bin")),
        c("put one chunk plus one byte", s_chunk_plus_one_up)
            .needs(Caps::WRITE)
            .after(After::Stored("chunk1-up.bin")),
        c("get an empty file", |p, _| get_exact(p, "empty.bin", b"")),
        c("get exactly one chunk", s_get_chunk),
    ]
}

fn more() -> Vec<Case> {
    let c = |name, s: super::Script, e| case(name, BOTH, Open, Act::Script(s), e);
    vec![
        c("Put, Data and Done sent at once", s_pipelined, Expect::Ok)
            .needs(Caps::WRITE)
            .after(After::Content("pipelined.bin", b"pipelined".to_vec())),
        c(
            "an upload cancelled, its Data dropped",
            s_cancelled_put,
            err(PUT_ID, C::CANCELLED, "", Stays),
        )
        .needs(Caps::WRITE)
        .after(After::Missing("cancelled.bin")),
        c("an upload resumed", s_resumed, Expect::Ok)
            .needs(Caps::WRITE.union(Caps::RESUME))
            .after(After::Content("resumed.bin", b"resumed upload".to_vec())),
        c("get from an offset", |p, _| s_get_at(p, 7, 7), Expect::Ok),
        c(
            "get from an offset past the end",
            |p, _| s_get_at(p, 99, 0),
            Expect::Ok,
        ),
        c(
            "put with force replaces, Remove removes",
            s_replace_and_remove,
            Expect::Ok,
        )
        .needs(Caps::WRITE)
        .after(After::Missing("replaced.txt")),
        c(
            "Remove of a missing file",
            |p, _| {
                super::kit::ask(
                    p,
                    5,
                    Message::Remove {
                        path: "missing.txt",
                    },
                )
            },
            err(5, C::NOT_FOUND, "", Stays),
        )
        .needs(Caps::WRITE),
    ]
}

fn lies() -> Vec<Case> {
    let c =
        |name, s: super::Script, e| case(name, BOTH, Open, Act::Script(s), e).needs(Caps::WRITE);
    let length = err(PUT_ID, C::BAD_LENGTH, "", Stays);
    let digest = err(PUT_ID, C::DIGEST_MISMATCH, "", Stays);
    vec![
        c(
            "put with a wrong digest",
            |p, _| put_with(p, "wrong-digest.bin", 5, b"12345", 5, Some(sha(b"54321"))),
            digest,
        )
        .after(After::Missing("wrong-digest.bin")),
        c(
            "put without a digest",
            |p, _| put_with(p, "no-digest.bin", 5, b"12345", 5, None),
            digest,
        )
        .after(After::Missing("no-digest.bin")),
        c(
            "put with too many bytes",
            |p, _| put_with(p, "too-many.bin", 4, b"123456", 4, Some(sha(b"1234"))),
            length,
        )
        .after(After::Missing("too-many.bin")),
        c(
            "more Data than announced, no Done",
            s_more_data_than_announced,
            err(72, C::BAD_LENGTH, "", Stays),
        )
        .after(After::Missing("long.bin")),
        c(
            "put with too few bytes",
            |p, _| put_with(p, "too-few.bin", 6, b"1234", 6, Some(sha(b"123456"))),
            length,
        )
        .after(After::Missing("too-few.bin")),
        c(
            "put whose Done lies about the size",
            |p, _| put_with(p, "done-lies.bin", 4, b"1234", 3, Some(sha(b"1234"))),
            length,
        )
        .after(After::Missing("done-lies.bin")),
        c(
            "put over an existing file without force",
            |p, _| put(p, "hello.txt", b"replaced?"),
            err(PUT_ID, C::EXISTS, "exists", Stays),
        )
        .after(After::Content("hello.txt", HELLO.to_vec())),
        c(
            "put announcing 2^63 bytes",
            |p, _| put_with(p, "huge.bin", 1 << 63, b"", 1 << 63, Some(sha(b""))),
            err(
                PUT_ID,
                C::NO_SPACE,
                "not enough space: 9223372036854775808 bytes needed",
                Stays,
            ),
        )
        .after(After::Missing("huge.bin")),
        c(
            "Data with another request id during a Put",
            s_wrong_id_during_put,
            err(52, C::BAD_REQUEST_ID, "not an upload", Stays),
        )
        .after(After::Missing("wrong-id.bin")),
        c(
            "upload cut short, then the client closes",
            s_cut_short,
            Expect::Closed,
        )
        .after(After::Missing("cut.bin")),
        c(
            "concurrent puts to one name",
            s_concurrent_puts,
            err(PUT_ID, C::BUSY, "another upload", Stays),
        )
        .after(After::Content("contended.bin", b"first one wins".to_vec())),
    ]
}

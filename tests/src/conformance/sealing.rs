//! Sealing: every frame after AuthOk carries a tag over its sequence
//! number and bytes; a frame without it, altered, replayed, reordered,
//! dropped, from another session or key, is refused INTEGRITY and acted
//! on never (PROTOCOL.md sections 5.2, 5.3).

use tether_proto::handshake::Sealer;
use tether_proto::wire::{Flags, PREFIX_LEN, TAG_LEN};
use tether_proto::{Caps, ErrorCode as C, Kind, Message};

use super::kit::{exec_msg, fix_crc, must, put_msg, recv, sha, start_put};
use super::Then::Close;
use super::{case, err, Act, After, Case, Expect, Fx, Observed, Stage::Open, KEYED};
use crate::peer::{frame, header, prefix, Peer};

type Res = Result<Observed, String>;

fn send_then_recv(p: &mut Peer<'_>, b: &[u8]) -> Res {
    p.send(b)?;
    recv(p)
}

fn s_unsealed(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    send_then_recv(p, &frame(5, Message::Ping { stamp: 1 }, &[]))
}

fn s_flag_cleared(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    // The sealed frame's header without SEALED and tag, checksum made to hold.
    let f = p.frame(1, Message::Ping { stamp: 1 }, &[]);
    let hl = usize::from(f[4]);
    send_then_recv(
        p,
        &crate::peer::raw_frame(&f[PREFIX_LEN..PREFIX_LEN + hl], &[]),
    )
}

fn s_replayed(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    let f = p.frame(5, Message::Ping { stamp: 1 }, &[]);
    p.send(&f)?;
    must(p, 5, Kind::Pong)?;
    send_then_recv(p, &f)
}

fn s_reordered(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    // A Remove held back behind a later frame: refused, hello.txt stays.
    let a = p.frame(5, Message::Remove { path: "hello.txt" }, &[]);
    let b = p.frame(6, Message::Ping { stamp: 2 }, &[]);
    send_then_recv(p, &[b, a].concat())
}

fn s_dropped(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    let _lost = p.frame(5, Message::Ping { stamp: 1 }, &[]);
    let b = p.frame(6, Message::Remove { path: "hello.txt" }, &[]);
    send_then_recv(p, &b)
}

fn s_other_session(p: &mut Peer<'_>, fx: &Fx<'_>) -> Res {
    let f = {
        let mut other = fx.connect(0, Open)?;
        other.frame(5, Message::Remove { path: "hello.txt" }, &[])
    };
    send_then_recv(p, &f)
}

fn s_reflected(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    // The server's own sealed Pong back to it (sealed under the other
    // direction's key), in place of the client's next frame.
    p.request(5, Message::Ping { stamp: 1 }, &[])?;
    let g = must(p, 5, Kind::Pong)?;
    let _ = p.frame(6, Message::Ping { stamp: 2 }, &[]);
    send_then_recv(p, &g.raw)
}

fn s_flipped_body(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    if let Err(o) = start_put(p, 40, "flipped.bin", 4)? {
        return Ok(o);
    }
    let mut f = p.frame(40, Message::Data, b"data");
    let n = f.len();
    // The body is not covered by the checksum: only the tag sees this.
    f[n - TAG_LEN - 2] ^= 0x01;
    p.send(&f)?;
    let sha256 = Some(sha(b"daua"));
    let done = p.frame(40, Message::Done { bytes: 4, sha256 }, &[]);
    let _ = p.send(&done);
    recv(p)
}

fn s_flipped_tag(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    let mut f = p.frame(5, Message::Ping { stamp: 1 }, &[]);
    let n = f.len();
    f[n - 1] ^= 0x80;
    send_then_recv(p, &f)
}

fn s_header_altered(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    // A Remove of a file that does not exist, turned by an attacker into
    // one of hello.txt, checksum recomputed (it is no MAC).
    let mut f = p.frame(5, Message::Remove { path: "hello.txs" }, &[]);
    let hl = usize::from(f[4]);
    f[PREFIX_LEN + hl - 1] = b't';
    fix_crc(&mut f);
    send_then_recv(p, &f)
}

fn s_other_key(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    let mut other = Sealer::new([9; 32]);
    let h = header(1, Message::Ping { stamp: 1 });
    let mut f = prefix(&h, 0, Flags::SEALED.bits());
    f.extend_from_slice(&h);
    let tag = other.begin(&f).finish();
    f.extend(tag);
    send_then_recv(p, &f)
}

fn s_tag_cut_short(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    let mut f = p.frame(1, Message::Ping { stamp: 1 }, &[]);
    f.truncate(f.len() - 6);
    let g = p.frame(2, Message::Ping { stamp: 2 }, &[]);
    send_then_recv(p, &[f, g].concat())
}

fn s_sealed_done_cut(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    if let Err(o) = start_put(p, 40, "truncated-done.bin", 4)? {
        return Ok(o);
    }
    p.request(40, Message::Data, b"abcd")?;
    let sha256 = Some(sha(b"abcd"));
    let done = p.frame(40, Message::Done { bytes: 4, sha256 }, &[]);
    p.send(&done[..done.len() - 1])?;
    p.close_write();
    recv(p)
}

fn s_tampered_exec(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    let mut buf = Vec::new();
    let m = exec_msg(&["touch", "pwned-tampered"], &mut buf);
    let mut f = p.frame(5, m, &[]);
    let n = f.len();
    f[n - 3] ^= 0x10;
    send_then_recv(p, &f)
}

fn s_tampered_put(p: &mut Peer<'_>, _: &Fx<'_>) -> Res {
    // A Put whose tag fails creates nothing.
    let mut f = p.frame(40, put_msg("tampered-put.bin", 1), &[]);
    let n = f.len();
    f[n - 5] ^= 0x01;
    send_then_recv(p, &f)
}

/// Every case of this family: all on a keyed server, after AuthOk.
pub fn cases() -> Vec<Case> {
    let integrity = |phrase| err(0, C::INTEGRITY, phrase, Close);
    let sealed =
        |name, s: super::Script, phrase| case(name, KEYED, Open, Act::Script(s), integrity(phrase));
    vec![
        sealed("an unsealed frame after Auth", s_unsealed, "unsealed"),
        sealed(
            "the SEALED flag cleared, checksum fixed",
            s_flag_cleared,
            "",
        ),
        sealed("a replayed sealed frame", s_replayed, ""),
        sealed("sealed frames reordered", s_reordered, ""),
        sealed("a sealed frame dropped", s_dropped, ""),
        sealed("a sealed frame from another session", s_other_session, ""),
        sealed("the server's own frame reflected", s_reflected, ""),
        sealed("a bit flipped in a sealed body", s_flipped_body, "")
            .after(After::Missing("flipped.bin")),
        sealed("a bit flipped in a tag", s_flipped_tag, ""),
        sealed(
            "a sealed header altered, checksum recomputed",
            s_header_altered,
            "",
        ),
        sealed("a frame sealed with another key", s_other_key, ""),
        sealed("a tag cut short by the next frame", s_tag_cut_short, ""),
        sealed(
            "a sealed Put with a bad tag creates nothing",
            s_tampered_put,
            "",
        )
        .after(After::Missing("tampered-put.bin")),
        sealed(
            "a sealed Exec with a bad tag does not run",
            s_tampered_exec,
            "",
        )
        .needs(Caps::EXEC)
        .after(After::Missing("pwned-tampered")),
        case(
            "a sealed Done cut short, then the client closes",
            KEYED,
            Open,
            Act::Script(s_sealed_done_cut),
            Expect::Closed,
        )
        .after(After::Missing("truncated-done.bin")),
        case(
            "garbage after Auth",
            KEYED,
            Open,
            Act::Bytes(b"\x00\x01 this is not a tether frame at all".to_vec()),
            err(0, C::BAD_FRAME, "magic", Close),
        ),
    ]
}

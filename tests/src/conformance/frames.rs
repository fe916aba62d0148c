//! Frames: truncated, bad prefixes, lengths at and past the limits,
//! headers that do not parse, request ids and directions (PROTOCOL.md
//! sections 1, 2.2).

use tether_proto::wire::{Flags, PREFIX_LEN};
use tether_proto::{ErrorCode as C, Kind, Message, Stream};

use super::kit::{
    abandon_puts, ask, frame_with, frames, hello_bytes, hello_header, hello_of_len, must, one,
    one_raw, recv, start_put, with_byte, with_prefix,
};
use super::Then::{Close, Open as Stays};
use super::{case, err, Act, Case, Expect, Fx, Observed, Phrase, Stage::*, BOTH, PLAIN};
use crate::peer::{header, prefix, Peer};

/// The flags of a frame this session sends (SEALED once authenticated).
fn session_flags(p: &Peer<'_>) -> u8 {
    if p.sealed() {
        Flags::SEALED.bits()
    } else {
        0
    }
}

fn s_truncated_request(p: &mut Peer<'_>, _: &Fx<'_>) -> Result<Observed, String> {
    let f = p.frame(5, Message::Stat { path: "hello.txt" }, &[]);
    p.send(&f[..20])?;
    p.close_write();
    recv(p)
}

fn s_header_at_limit(p: &mut Peer<'_>, _: &Fx<'_>) -> Result<Observed, String> {
    // An Echo whose header is exactly the negotiated limit.
    let limit = p.max_header as usize;
    let mut n = limit - 8;
    let text = loop {
        let t = "e".repeat(n);
        let len = header(5, Message::Echo { text: &t }).len();
        match len.cmp(&limit) {
            std::cmp::Ordering::Equal => break t,
            std::cmp::Ordering::Less => n += 1,
            std::cmp::Ordering::Greater => n -= 1,
        }
    };
    ask(p, 5, Message::Echo { text: &text })
}

/// Only a prefix announcing these lengths: the limits are enforced before
/// a byte of header or body is read.
fn prefix_only(p: &mut Peer<'_>, header_len: usize, body_len: u64) -> Result<Observed, String> {
    let h = vec![0u8; header_len];
    p.send(&prefix(&h, body_len, session_flags(p)))?;
    recv(p)
}

fn s_reused_id(p: &mut Peer<'_>, _: &Fx<'_>) -> Result<Observed, String> {
    // An upload stays in flight until its Done: a request with its id is refused.
    if let Err(o) = start_put(p, 9, "reused-id.bin", 0)? {
        return Err(format!("the upload was refused: {o:?}"));
    }
    let got = ask(p, 9, Message::Stat { path: "hello.txt" })?;
    abandon_puts(p, [9])?;
    Ok(got)
}

fn s_too_many_requests(p: &mut Peer<'_>, fx: &Fx<'_>) -> Result<Observed, String> {
    // max_requests uploads in flight, then one request more.
    let ids: Vec<u32> = (100..100 + u32::from(fx.ack.max_requests)).collect();
    for &id in &ids {
        let name = format!("in-flight-{id}.bin");
        if let Err(o) = start_put(p, id, &name, 0)? {
            return Err(format!("upload {id} of {} was refused: {o:?}", ids.len()));
        }
    }
    let got = ask(p, 99, Message::Stat { path: "hello.txt" })?;
    abandon_puts(p, ids)?;
    // Ping, Echo and Time never count: answered while the uploads ran.
    Ok(got)
}

fn s_pipelined_around_busy(p: &mut Peer<'_>, fx: &Fx<'_>) -> Result<Observed, String> {
    // With every slot taken, Ping, Echo and Time are still answered.
    let ids: Vec<u32> = (100..100 + u32::from(fx.ack.max_requests)).collect();
    for &id in &ids {
        if let Err(o) = start_put(p, id, &format!("slot-{id}.bin"), 0)? {
            return Err(format!("upload {id} was refused: {o:?}"));
        }
    }
    p.request(96, Message::Echo { text: "x" }, &[])?;
    must(p, 96, Kind::EchoReply)?;
    p.request(97, Message::Time { format: "" }, &[])?;
    must(p, 97, Kind::TimeReply)?;
    p.request(98, Message::Ping { stamp: 1 }, &[])?;
    let got = recv(p)?;
    abandon_puts(p, ids)?;
    Ok(got)
}

/// Every case of this family.
pub fn cases() -> Vec<Case> {
    let hello = hello_bytes();
    let hh = hello_header("x");
    let mut v = truncated_and_prefixes(&hello, &hh);
    v.extend(lengths(&hh));
    v.extend(headers());
    v.extend(ids_and_directions());
    v
}

fn truncated_and_prefixes(hello: &[u8], hh: &[u8]) -> Vec<Case> {
    let cut = |n: usize| Act::BytesThenClose(hello[..n].to_vec());
    let bytes = |b: Vec<u8>| Act::Bytes(b);
    let mut flipped_header = hello.to_vec();
    flipped_header[PREFIX_LEN + 5] ^= 0x40;
    vec![
        case(
            "truncated after 1 byte",
            BOTH,
            Connected,
            cut(1),
            Expect::Closed,
        ),
        case(
            "truncated inside the prefix",
            BOTH,
            Connected,
            cut(10),
            Expect::Closed,
        ),
        case(
            "truncated before the checksum ends",
            BOTH,
            Connected,
            cut(17),
            Expect::Closed,
        ),
        case(
            "truncated inside the header",
            BOTH,
            Connected,
            cut(PREFIX_LEN + 5),
            Expect::Closed,
        ),
        case(
            "a request cut short, then the client closes",
            BOTH,
            Open,
            Act::Script(s_truncated_request),
            Expect::Closed,
        ),
        case(
            "bad magic (an HTTP request)",
            BOTH,
            Connected,
            bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
            err(0, C::BAD_FRAME, "magic", Close),
        ),
        case(
            "bad magic (a TLS ClientHello)",
            BOTH,
            Connected,
            bytes(vec![0x16, 3, 1, 0, 0x2e, 1, 0, 0, 0x2a]),
            err(0, C::BAD_FRAME, "magic", Close),
        ),
        case(
            "bad magic (bytes swapped)",
            BOTH,
            Connected,
            bytes(with_byte(with_byte(hello.to_vec(), 0, b'H'), 1, b'T')),
            err(0, C::BAD_FRAME, "magic", Close),
        ),
        case(
            "bad magic (second byte)",
            BOTH,
            Connected,
            bytes(with_byte(hello.to_vec(), 1, b'X')),
            err(0, C::BAD_FRAME, "magic", Close),
        ),
        case(
            "version 0",
            BOTH,
            Connected,
            bytes(with_prefix(hh, 0, 0)),
            err(0, C::UNSUPPORTED_VERSION, "version 0", Close),
        ),
        case(
            "version 2",
            BOTH,
            Connected,
            bytes(with_prefix(hh, 2, 0)),
            err(0, C::UNSUPPORTED_VERSION, "version 2", Close),
        ),
        case(
            "version 255",
            BOTH,
            Connected,
            bytes(with_prefix(hh, 255, 0)),
            err(0, C::UNSUPPORTED_VERSION, "version 255", Close),
        ),
        case(
            "reserved flag bit 1",
            BOTH,
            Connected,
            bytes(with_prefix(hh, 1, 0x02)),
            err(0, C::UNKNOWN_FLAGS, "0x02", Close),
        ),
        case(
            "reserved flag bit 7",
            BOTH,
            Connected,
            bytes(with_prefix(hh, 1, 0x80)),
            err(0, C::UNKNOWN_FLAGS, "0x80", Close),
        ),
        case(
            "every flag bit",
            BOTH,
            Connected,
            bytes(with_prefix(hh, 1, 0xff)),
            err(0, C::UNKNOWN_FLAGS, "", Close),
        ),
        case(
            "bad checksum",
            BOTH,
            Connected,
            bytes(with_byte(hello.to_vec(), 14, hello[14] ^ 0xff)),
            err(0, C::BAD_FRAME, "checksum", Close),
        ),
        case(
            "a header bit flipped (the checksum no longer holds)",
            BOTH,
            Connected,
            bytes(flipped_header),
            err(0, C::BAD_FRAME, "checksum", Close),
        ),
        case(
            "header_len 0",
            BOTH,
            Connected,
            bytes({
                let mut p = prefix(&[], 0, 0);
                p.extend_from_slice(&[0, 0]);
                p
            }),
            err(0, C::BAD_FRAME, "empty header", Close),
        ),
    ]
}

fn lengths(hh: &[u8]) -> Vec<Case> {
    let limit = |a: &super::Ack| format!("{}", a.max_header);
    vec![
        case(
            "header exactly the handshake limit (512)",
            BOTH,
            Connected,
            Act::Bytes(hello_of_len(512)),
            Expect::Reply {
                id: 0,
                kind: Kind::HelloAck,
            },
        ),
        case(
            "a 512-byte header that is no Hello",
            BOTH,
            Connected,
            Act::Bytes(frame_with(&[0u8; 512], 0, 0, &[])),
            err(0, C::INVALID_HEADER, "", Close),
        ),
        case(
            "header one past the handshake limit",
            BOTH,
            Connected,
            Act::Bytes(prefix(&[0u8; 513], 0, 0)),
            err(0, C::HEADER_TOO_LARGE, "513", Close),
        ),
        case(
            "header_len 65535",
            BOTH,
            Connected,
            Act::Bytes(prefix(&[0u8; 65535], 0, 0)),
            err(0, C::HEADER_TOO_LARGE, "65535", Close),
        ),
        case(
            "body_len 2^63 before Hello",
            BOTH,
            Connected,
            Act::Bytes(prefix(hh, 1 << 63, 0)),
            err(0, C::BODY_TOO_LARGE, "9223372036854775808", Close),
        ),
        case(
            "body one past the handshake limit before Hello",
            BOTH,
            Connected,
            Act::Bytes(prefix(hh, 513, 0)),
            err(0, C::BODY_TOO_LARGE, "513", Close),
        ),
        case(
            "header exactly max_header",
            BOTH,
            Open,
            Act::Script(s_header_at_limit),
            Expect::Reply {
                id: 5,
                kind: Kind::EchoReply,
            },
        ),
        case(
            "header one byte over max_header",
            BOTH,
            Open,
            Act::Script(|p, _| prefix_only(p, p.max_header as usize + 1, 0)),
            err(0, C::HEADER_TOO_LARGE, Phrase::Of(limit), Close),
        ),
        case(
            "body_len 2^63",
            BOTH,
            Open,
            Act::Script(|p, _| prefix_only(p, 2, 1 << 63)),
            err(0, C::BODY_TOO_LARGE, "9223372036854775808", Close),
        ),
        case(
            "body_len 2^64-1",
            BOTH,
            Open,
            Act::Script(|p, _| prefix_only(p, 2, u64::MAX)),
            err(0, C::BODY_TOO_LARGE, "18446744073709551615", Close),
        ),
        case(
            "body one byte over max_chunk",
            BOTH,
            Open,
            Act::Script(|p, _| prefix_only(p, 2, u64::from(p.max_chunk) + 1)),
            err(
                0,
                C::BODY_TOO_LARGE,
                Phrase::Of(|a| format!("{}", a.max_chunk)),
                Close,
            ),
        ),
        case(
            "a body on a kind without one",
            BOTH,
            Open,
            frames(vec![(45, Message::Ping { stamp: 1 }, b"junk".to_vec())]),
            err(45, C::UNEXPECTED, "body", Stays),
        ),
    ]
}

fn headers() -> Vec<Case> {
    let bad =
        |name, h: Vec<u8>, id, code| case(name, BOTH, Open, one_raw(h), err(id, code, "", Stays));
    vec![
        bad("unknown kind 26", vec![5, 26], 5, C::UNKNOWN_KIND),
        bad(
            "unknown kind 99 with fields",
            vec![40, 99, 1],
            40,
            C::UNKNOWN_KIND,
        ),
        bad(
            "unknown kind 65535",
            vec![5, 0xff, 0xff, 0x03],
            5,
            C::UNKNOWN_KIND,
        ),
        bad(
            "a kind number past u32",
            vec![41, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            41,
            C::INVALID_HEADER,
        ),
        bad(
            "string length past the header",
            vec![5, 6, 100, b'a', b'b', b'c'],
            5,
            C::INVALID_HEADER,
        ),
        bad(
            "a text that is not UTF-8",
            vec![5, 6, 2, 0xff, 0xfe],
            5,
            C::INVALID_HEADER,
        ),
        bad(
            "a path that is not UTF-8",
            vec![42, 14, 2, 0xc3, 0x28],
            42,
            C::INVALID_HEADER,
        ),
        bad(
            "trailing header bytes",
            vec![5, 4, 1, 0],
            5,
            C::INVALID_HEADER,
        ),
        bad(
            "an overlong request id of six bytes (unreadable)",
            vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 4, 1],
            0,
            C::INVALID_HEADER,
        ),
        bad(
            "an overlong request id (readable)",
            vec![0x80 | 43, 0x00, 4, 1],
            43,
            C::INVALID_HEADER,
        ),
        bad(
            "a request id past u32",
            vec![0xff, 0xff, 0xff, 0xff, 0x7f, 4, 1],
            0,
            C::INVALID_HEADER,
        ),
        bad(
            "an overlong u64 field",
            [&[5u8, 4][..], &[0xff; 10], &[0x7f]].concat(),
            5,
            C::INVALID_HEADER,
        ),
        bad(
            "a bool of 2",
            vec![5, 0x16, 1, b'x', 1, 2, 0],
            5,
            C::INVALID_HEADER,
        ),
        bad(
            "an Option tag of 2",
            vec![5, 0x0a, 0, 2, b'l', b's', 2, 1],
            5,
            C::INVALID_HEADER,
        ),
        bad(
            "an enum variant out of range",
            vec![5, 0x0a, 7, 2, b'l', b's', 0],
            5,
            C::INVALID_HEADER,
        ),
    ]
}

fn ids_and_directions() -> Vec<Case> {
    let no_upload = |id| err(id, C::BAD_REQUEST_ID, "not an upload", Stays);
    vec![
        case(
            "request id 0",
            BOTH,
            Open,
            one(0, Message::Stat { path: "hello.txt" }),
            err(0, C::BAD_REQUEST_ID, "0", Stays),
        ),
        case(
            "a request id in flight used again",
            BOTH,
            Open,
            Act::Script(s_reused_id),
            err(9, C::BAD_REQUEST_ID, "in use", Stays),
        )
        .needs(tether_proto::Caps::WRITE),
        case(
            "one request more than max_requests",
            BOTH,
            Open,
            Act::Script(s_too_many_requests),
            err(
                99,
                C::BUSY,
                Phrase::Of(|a| format!("{} requests", a.max_requests)),
                Stays,
            ),
        )
        .needs(tether_proto::Caps::WRITE),
        case(
            "Ping, Echo and Time with max_requests in flight",
            BOTH,
            Open,
            Act::Script(s_pipelined_around_busy),
            Expect::Reply {
                id: 98,
                kind: Kind::Pong,
            },
        )
        .needs(tether_proto::Caps::WRITE),
        case(
            "a reply kind from the client (Pong)",
            BOTH,
            Open,
            one(55, Message::Pong { stamp: 1 }),
            err(55, C::UNEXPECTED, "Pong", Stays),
        ),
        case(
            "a reply kind from the client (PutReady)",
            BOTH,
            Open,
            one(
                5,
                Message::PutReady {
                    offset: 0,
                    prefix_sha256: None,
                },
            ),
            err(5, C::UNEXPECTED, "PutReady", Stays),
        ),
        case(
            "an Output with a body from the client",
            BOTH,
            Open,
            frames(vec![(
                5,
                Message::Output {
                    stream: Stream::Stdout,
                },
                b"out".to_vec(),
            )]),
            err(5, C::UNEXPECTED, "Output", Stays),
        ),
        case(
            "an Error from the client",
            BOTH,
            Open,
            one(
                54,
                Message::Error {
                    code: C::IO,
                    message: "boo",
                },
            ),
            err(54, C::UNEXPECTED, "Error", Stays),
        ),
        case(
            "Data for no upload",
            BOTH,
            Open,
            frames(vec![(77, Message::Data, b"stray".to_vec())]),
            no_upload(77),
        ),
        case(
            "Done for no upload",
            BOTH,
            Open,
            one(
                78,
                Message::Done {
                    bytes: 0,
                    sha256: None,
                },
            ),
            no_upload(78),
        ),
        case(
            "Cancel of an unknown request",
            BOTH,
            Open,
            one(0, Message::Cancel { target: 4242 }),
            Expect::Nothing,
        ),
        case(
            "Cancel with an id of its own, of an unknown request",
            BOTH,
            Open,
            one(53, Message::Cancel { target: 999 }),
            Expect::Nothing,
        ),
        case(
            "a sealed frame on a session without a key",
            PLAIN,
            Open,
            Act::Bytes({
                let h = header(5, Message::Ping { stamp: 1 });
                frame_with(&h, 0, Flags::SEALED.bits(), &[0u8; 16])
            }),
            err(5, C::UNEXPECTED, "sealed", Stays),
        ),
    ]
}

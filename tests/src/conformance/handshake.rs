//! The handshake and authentication: Hello, HelloAck, Auth, AuthOk, and
//! everything sent in their place (PROTOCOL.md sections 2.1, 5.1).

use tether_proto::handshake::ClientHandshake;
use tether_proto::message::Proof;
use tether_proto::wire::Flags;
use tether_proto::{Caps, ErrorCode as C, Hello, Kind, Message};

use super::kit::{
    exec_header, frame_with, hello_bytes, hello_header, hello_header_caps, must, one, recv,
};
use super::Then::{Close, Open as Stays};
use super::{case, err, Act, After, Case, Fx, Observed, Stage::*, BOTH, KEYED, PLAIN};
use crate::peer::{header, raw_frame, Peer};

fn bytes(b: Vec<u8>) -> Act {
    Act::Bytes(b)
}

fn hello_with(f: impl FnOnce(&mut Hello<'static>)) -> Vec<u8> {
    let mut h = Hello {
        version: 1,
        max_header: 8192,
        max_chunk: 256 * 1024,
        caps: super::kit::KEY_CAPS,
        nonce: [0; 16],
        agent: "conformance",
    };
    f(&mut h);
    raw_frame(&header(0, Message::Hello(h)), &[])
}

fn s_replayed_handshake(p: &mut Peer<'_>, fx: &Fx<'_>) -> Result<Observed, String> {
    // A genuine client's Hello and Auth, as an eavesdropper records them...
    let (hello, auth) = {
        let mut victim = fx.connect(0, Connected)?;
        let mut hs = ClientHandshake::new(
            fx.key,
            fx.nonce(),
            8192,
            256 * 1024,
            Caps::empty(),
            "victim",
        );
        let hello = victim.frame(0, Message::Hello(hs.hello().clone()), &[]);
        victim.send(&hello)?;
        let g = must(&mut victim, 0, Kind::HelloAck)?;
        let Message::HelloAck(ack) = g.message() else {
            return Err(format!("got {}", g.describe()));
        };
        let proof = hs
            .handle_hello_ack(&ack)
            .map_err(|e| e.to_string())?
            .ok_or("the server did not ask for Auth")?;
        let auth = victim.frame(0, Message::Auth(proof), &[]);
        victim.send(&auth)?;
        must(&mut victim, 0, Kind::AuthOk)?;
        (hello, auth)
    };
    // ...replayed on another connection: the server's new nonce makes it fail.
    p.send(&hello)?;
    must(p, 0, Kind::HelloAck)?;
    p.send(&auth)?;
    recv(p)
}

/// Every case of this family.
pub fn cases() -> Vec<Case> {
    let mut v = before_hello();
    v.extend(before_auth());
    v.extend(once_open());
    v
}

fn before_hello() -> Vec<Case> {
    let hh = hello_header("x");
    vec![
        case(
            "a request before Hello",
            BOTH,
            Connected,
            one(5, Message::Ping { stamp: 1 }),
            err(0, C::UNEXPECTED, "Hello", Close),
        ),
        case(
            "an unknown kind before Hello",
            BOTH,
            Connected,
            bytes(raw_frame(&[1, 99, 1], &[])),
            err(0, C::UNKNOWN_KIND, "", Close),
        ),
        case(
            "Hello with a body",
            BOTH,
            Connected,
            bytes(raw_frame(&hh, b"body")),
            err(0, C::UNEXPECTED, "Hello", Close),
        ),
        case(
            "a sealed Hello",
            BOTH,
            Connected,
            bytes(frame_with(&hh, 0, Flags::SEALED.bits(), &[0x5a; 16])),
            err(0, C::UNEXPECTED, "Hello", Close),
        ),
        case(
            "Hello announcing version 0",
            BOTH,
            Connected,
            bytes(hello_with(|h| h.version = 0)),
            err(0, C::UNSUPPORTED_VERSION, "version 0", Close),
        ),
        case(
            "Hello with limits below 64 bytes",
            BOTH,
            Connected,
            bytes(hello_with(|h| {
                h.max_header = 10;
                h.max_chunk = 10;
            })),
            err(0, C::BAD_LENGTH, "64", Close),
        ),
        case(
            "Hello with a chunk limit below 64 bytes",
            BOTH,
            Connected,
            bytes(hello_with(|h| h.max_chunk = 10)),
            err(0, C::BAD_LENGTH, "64", Close),
        ),
        case(
            "Hello that is not valid postcard",
            BOTH,
            Connected,
            bytes(raw_frame(&[0, 0, 1, 0x80], &[])),
            err(0, C::INVALID_HEADER, "", Close),
        ),
        case(
            "Hello cut inside its fields",
            BOTH,
            Connected,
            bytes(raw_frame(&hh[..hh.len() - 3], &[])),
            err(0, C::INVALID_HEADER, "", Close),
        ),
        case(
            "Hello with trailing header bytes",
            BOTH,
            Connected,
            bytes(raw_frame(&[&hh[..], &[0]].concat(), &[])),
            err(0, C::INVALID_HEADER, "", Close),
        ),
        case(
            "Hello without a key",
            KEYED,
            Connected,
            bytes(raw_frame(&hello_header_caps("x", Caps::empty()), &[])),
            err(0, C::AUTH_REQUIRED, "key", Close),
        ),
        case(
            "Hello offering AUTH_PSK but not SEAL",
            KEYED,
            Connected,
            bytes(raw_frame(&hello_header_caps("x", Caps::AUTH_PSK), &[])),
            err(0, C::AUTH_REQUIRED, "SEAL", Close),
        ),
    ]
}

fn before_auth() -> Vec<Case> {
    let required = |id| err(id, C::AUTH_REQUIRED, "key", Close);
    let pre = |name, act, expect| case(name, KEYED, HelloAck, act, expect);
    let auth = |mac| header(0, Message::Auth(Proof { mac }));
    vec![
        pre(
            "a Ping before Auth",
            one(5, Message::Ping { stamp: 1 }),
            required(5),
        ),
        pre(
            "an Exec before Auth",
            Act::Frames(vec![(
                exec_header(6, &["touch", "pwned-before-auth"]),
                vec![],
            )]),
            required(6),
        )
        .after(After::Missing("pwned-before-auth")),
        pre(
            "a Put before Auth",
            one(
                7,
                Message::Put {
                    path: "before-auth.bin",
                    size: 1,
                    force: true,
                    resume: false,
                },
            ),
            required(7),
        )
        .after(After::Missing("before-auth.bin")),
        pre(
            "a Get before Auth",
            one(
                8,
                Message::Get {
                    path: "hello.txt",
                    offset: 0,
                },
            ),
            required(8),
        ),
        pre(
            "an unknown kind before Auth",
            Act::Frames(vec![(vec![9, 99, 1], vec![])]),
            required(9),
        ),
        pre(
            "a sealed frame before Auth",
            bytes(frame_with(
                &header(5, Message::Stat { path: "hello.txt" }),
                0,
                Flags::SEALED.bits(),
                &[0xaa; 16],
            )),
            required(5),
        ),
        pre(
            "a sealed Auth",
            bytes(frame_with(
                &auth([1; 32]),
                0,
                Flags::SEALED.bits(),
                &[0x5a; 16],
            )),
            required(0),
        ),
        pre(
            "Auth with a body",
            bytes(raw_frame(&auth([1; 32]), b"xyz")),
            required(0),
        ),
        pre(
            "AuthOk from the client",
            one(0, Message::AuthOk(Proof { mac: [0; 32] })),
            required(0),
        ),
        pre("Hello again before Auth", bytes(hello_bytes()), required(0)),
        pre(
            "a header past 512 bytes before Auth",
            bytes(crate::peer::prefix(&[0u8; 513], 0, 0)),
            err(0, C::HEADER_TOO_LARGE, "513", Close),
        ),
        pre(
            "a body past 512 bytes before Auth",
            bytes(crate::peer::prefix(&[0u8; 2], 513, 0)),
            err(0, C::BODY_TOO_LARGE, "513", Close),
        ),
        pre(
            "Auth with a wrong proof",
            one(0, Message::Auth(Proof { mac: [0x42; 32] })),
            err(0, C::AUTH_FAILED, "key", Close),
        )
        .peer(1),
        case(
            "a recorded Hello and Auth replayed",
            KEYED,
            Connected,
            Act::Script(s_replayed_handshake),
            err(0, C::AUTH_FAILED, "key", Close),
        )
        .peer(2),
    ]
}

fn once_open() -> Vec<Case> {
    vec![
        case(
            "a second Hello",
            BOTH,
            Open,
            Act::Frames(vec![(hello_header("again"), vec![])]),
            err(0, C::UNEXPECTED, "Hello", Stays),
        ),
        case(
            "a second Hello with a request id",
            BOTH,
            Open,
            Act::Frames(vec![(
                [&[56u8][..], &hello_header("again")[1..]].concat(),
                vec![],
            )]),
            err(56, C::UNEXPECTED, "Hello", Stays),
        ),
        case(
            "Auth on a server without a key",
            PLAIN,
            Open,
            one(0, Message::Auth(Proof { mac: [1; 32] })),
            err(0, C::UNEXPECTED, "Auth", Stays),
        ),
        case(
            "a second Auth once authenticated",
            KEYED,
            Open,
            one(0, Message::Auth(Proof { mac: [1; 32] })),
            err(0, C::UNEXPECTED, "Auth", Stays),
        ),
        case(
            "a second Auth with a request id",
            KEYED,
            Open,
            one(57, Message::Auth(Proof { mac: [0; 32] })),
            err(57, C::UNEXPECTED, "Auth", Stays),
        ),
    ]
}

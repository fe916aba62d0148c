//! Deadlines: the handshake's and idleness (PROTOCOL.md section 2.4), on
//! servers with short ones (handshake 1 s, idle 2 s).

use tether_proto::{ErrorCode as C, Message};

use super::kit::{hello_bytes, recv, start_put, PUT_ID};
use super::Then::Close;
use super::{case, err, Act, After, Case, Fx, Observed, Server, Stage::*, KEYED_DEADLINES};
use crate::peer::Peer;

/// Both configurations with short deadlines.
const SHORT: &[Server] = &[Server::Deadlines, Server::KeyedDeadlines];

fn s_wait(p: &mut Peer<'_>, _: &Fx<'_>) -> Result<Observed, String> {
    recv(p)
}

fn s_half_hello(p: &mut Peer<'_>, _: &Fx<'_>) -> Result<Observed, String> {
    let h = hello_bytes();
    p.send(&h[..h.len() / 2])?;
    recv(p)
}

fn s_stalled_upload(p: &mut Peer<'_>, _: &Fx<'_>) -> Result<Observed, String> {
    if let Err(o) = start_put(p, PUT_ID, "stalled.bin", 10)? {
        return Ok(o);
    }
    p.request(PUT_ID, Message::Data, b"1234")?;
    recv(p)
}

/// Every case of this family.
pub fn cases() -> Vec<Case> {
    let handshake = err(0, C::TIMEOUT, "handshake deadline", Close);
    vec![
        case(
            "a client that never sends Hello",
            SHORT,
            Connected,
            Act::Script(s_wait),
            handshake,
        ),
        case(
            "half a Hello, then silence",
            SHORT,
            Connected,
            Act::Script(s_half_hello),
            handshake,
        ),
        case(
            "Hello, then no Auth",
            KEYED_DEADLINES,
            HelloAck,
            Act::Script(s_wait),
            handshake,
        ),
        case(
            "an idle connection",
            SHORT,
            Open,
            Act::Script(s_wait),
            err(0, C::TIMEOUT, "idle", Close),
        ),
        case(
            "an upload that stops sending",
            SHORT,
            Open,
            Act::Script(s_stalled_upload),
            err(0, C::TIMEOUT, "upload", Close),
        )
        .needs(tether_proto::Caps::WRITE)
        .after(After::Missing("stalled.bin")),
    ]
}

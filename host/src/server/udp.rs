//! The datagram services (ping, echo, time) on UDP: one whole frame with an
//! empty body per datagram, each way.
//!
//! They are not authenticated (a datagram carries no session), so they may
//! not be an amplifier for spoofed traffic: a reply is never longer than
//! the datagram it answers plus [`UDP_SLACK`] bytes (Echo and Ping replies
//! are exactly as long as the request; a Time reply whose text would break
//! the bound is replaced by `TOO_LARGE`, and error texts are clipped), and
//! a reply (Pong, EchoReply, TimeReply, Error) is never answered, so two
//! servers cannot be made to bounce datagrams between them.

use std::sync::Arc;

use tether_proto::codec::{encode_frame, Decoder, Event, Limits};
use tether_proto::{ErrorCode, Header, Message, MAX_DATAGRAM};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::conn::clip;
use crate::timefmt;

/// A reply datagram is at most this many bytes longer than its request.
pub const UDP_SLACK: usize = 96;

/// Bytes of an Error frame besides its text: prefix, request id (5 at
/// most), kind, code (3 at most) and the text's length (2 for up to 16 KiB).
const ERROR_OVERHEAD: usize = tether_proto::wire::PREFIX_LEN + 5 + 1 + 3 + 2;

/// Answer one datagram into `out`; `None` means stay silent.
pub fn answer<'o>(dgram: &[u8], out: &'o mut [u8]) -> (Option<&'o [u8]>, String) {
    let mut hbuf = [0u8; MAX_DATAGRAM];
    let budget = (dgram.len() + UDP_SLACK).min(MAX_DATAGRAM);
    let reply_err = |out: &'o mut [u8], id: u32, code: ErrorCode, msg: &str| {
        let h = Header::new(
            id,
            Message::Error {
                code,
                message: clip(msg, (budget - ERROR_OVERHEAD).min(400)),
            },
        );
        encode_frame(&h, &[], out).ok()
    };
    if dgram.len() > MAX_DATAGRAM {
        let msg = format!(
            "datagram of {} bytes exceeds the limit of {MAX_DATAGRAM}",
            dgram.len()
        );
        return (reply_err(out, 0, ErrorCode::TOO_LARGE, &msg), msg);
    }
    let mut dec = Decoder::new(
        &mut hbuf[..],
        Limits {
            max_header: MAX_DATAGRAM as u16,
            max_body: 0,
        },
    );
    let (used, ev) = dec.handle_bytes(dgram);
    let frame = match ev {
        Ok(Some(Event::Header(f))) => f,
        Ok(_) => {
            let msg = "truncated frame: a datagram must hold one whole frame".to_string();
            return (reply_err(out, 0, ErrorCode::BAD_FRAME, &msg), msg);
        }
        Err(e) => {
            let msg = format!("not a tether frame: {e}");
            return (reply_err(out, 0, e.code(), &msg), msg);
        }
    };
    if used != dgram.len() {
        let msg = "extra bytes after the frame: a datagram holds exactly one frame".to_string();
        return (reply_err(out, 0, ErrorCode::BAD_FRAME, &msg), msg);
    }
    let h = match frame.parse() {
        Ok(h) => h,
        Err(e) => {
            let msg = e.to_string();
            return (
                reply_err(out, e.request_id.unwrap_or(0), e.code(), &msg),
                msg,
            );
        }
    };
    let id = h.request_id;
    if matches!(
        h.message,
        Message::Pong { .. }
            | Message::EchoReply { .. }
            | Message::TimeReply { .. }
            | Message::Error { .. }
    ) {
        // Never answer a reply: two servers (or a spoofed source) cannot
        // be made to bounce datagrams between them.
        return (
            None,
            format!(
                "{:?} ignored (replies are never answered)",
                h.message.kind()
            ),
        );
    }
    let time;
    let upper;
    let (reply, what) = match h.message {
        Message::Ping { stamp } => (Message::Pong { stamp }, "ping".to_string()),
        Message::Echo { text } => {
            upper = text.to_ascii_uppercase();
            (
                Message::EchoReply { text: &upper },
                format!("echo {} bytes", text.len()),
            )
        }
        Message::Time { format } => match timefmt::now(format) {
            Ok(t) => {
                time = t;
                (
                    Message::TimeReply {
                        unix_ms: time.0,
                        text: &time.1,
                    },
                    format!("time {:?}", clip(format, 40)),
                )
            }
            Err(msg) => return (reply_err(out, id, ErrorCode::INVALID_HEADER, &msg), msg),
        },
        other => {
            let msg = format!(
                "{:?} is not served over UDP (only Ping, Echo and Time are)",
                other.kind()
            );
            return (reply_err(out, id, ErrorCode::UNEXPECTED, &msg), msg);
        }
    };
    let h = Header::new(id, reply);
    let mut big = [0u8; 4 * MAX_DATAGRAM];
    match encode_frame(&h, &[], &mut big) {
        Ok(f) if f.len() <= budget => {
            let n = f.len();
            out[..n].copy_from_slice(f);
            (Some(&out[..n]), format!("{what} -> ok"))
        }
        Ok(f) if f.len() <= MAX_DATAGRAM => {
            let msg = format!(
                "the reply datagram would be {} bytes, more than the request plus {UDP_SLACK} (no amplification); shorten the format",
                f.len()
            );
            (reply_err(out, id, ErrorCode::TOO_LARGE, &msg), msg)
        }
        _ => {
            let msg = format!(
                "the reply to {what} would not fit in one datagram of {MAX_DATAGRAM} bytes"
            );
            (reply_err(out, id, ErrorCode::TOO_LARGE, &msg), msg)
        }
    }
}

/// Serve datagrams until `shutdown` turns true.
pub async fn serve(sock: Arc<UdpSocket>, mut shutdown: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 65536];
    let mut out = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    debug!("udp receive error: {e}");
                    continue;
                }
            },
        };
        let start = std::time::Instant::now();
        let (reply, what) = answer(&buf[..n], &mut out);
        info!(
            "{peer} udp {what} ({} bytes in, {:.3} ms)",
            n,
            start.elapsed().as_secs_f64() * 1e3
        );
        if let Some(r) = reply {
            if let Err(e) = sock.send_to(r, peer).await {
                debug!("udp send to {peer} failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(msg: Message<'_>) -> Vec<u8> {
        let mut b = vec![0u8; MAX_DATAGRAM];
        let n = encode_frame(&Header::new(u32::MAX, msg), &[], &mut b)
            .unwrap()
            .len();
        b.truncate(n);
        b
    }

    #[test]
    fn replies_never_exceed_the_request_plus_the_slack() {
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x54],
            b"TH".to_vec(),
            vec![0xff; 17],
            vec![0u8; 18],
            vec![0u8; MAX_DATAGRAM + 1],
            request(Message::Ping { stamp: u64::MAX }),
            request(Message::Echo { text: "" }),
            request(Message::Echo {
                text: &"é".repeat(600),
            }),
            request(Message::Time { format: "" }),
            request(Message::Stat { path: "x" }),
        ];
        for f in [
            "%c",
            "%c%c",
            "%A %B",
            "%Y-%m-%d %H:%M:%S",
            "%%",
            "%Q",
            "%s%s%s%s",
        ] {
            cases.push(request(Message::Time { format: f }));
        }
        let long = "%c".repeat(300);
        cases.push(request(Message::Time { format: &long }));
        let mut out = vec![0u8; MAX_DATAGRAM];
        for d in &cases {
            let (reply, what) = answer(d, &mut out);
            let n = reply.map_or(0, |r| r.len());
            assert!(n > 0, "every datagram is answered: {what}");
            assert!(
                n <= (d.len() + UDP_SLACK).min(MAX_DATAGRAM),
                "{} bytes in, {n} out: {what}",
                d.len()
            );
        }
        // Replies are never answered (no loops between two servers).
        for m in [
            Message::Pong { stamp: 1 },
            Message::EchoReply { text: "x" },
            Message::TimeReply {
                unix_ms: 1,
                text: "x",
            },
            Message::Error {
                code: ErrorCode::BAD_FRAME,
                message: "x",
            },
        ] {
            let (reply, what) = answer(&request(m), &mut out);
            assert!(reply.is_none(), "{what}");
        }
        // "%c" is 2 bytes of format and 24 of text: fine once, refused when
        // repeated past the slack.
        let (reply, what) = answer(&request(Message::Time { format: "%c" }), &mut out);
        assert!(what.ends_with("ok"), "{what}");
        assert!(reply.is_some());
        let (_, what) = answer(
            &request(Message::Time {
                format: &"%c".repeat(8),
            }),
            &mut out,
        );
        assert!(what.contains("no amplification"), "{what}");
    }
}

//! The datagram services (ping, echo, time) on UDP: socket I/O and logging
//! around the core's shared service, [`tether_proto::datagram::answer`],
//! which owns the protocol (refusals, replies, the anti-amplification rule:
//! a reply is at most the request plus [`datagram::SLACK`] bytes, and
//! replies are never answered). The host only brings its clock; the
//! format dialect is the core's, the same on every peer.

use std::sync::Arc;

use tether_proto::datagram::{self, Answer, Outcome, TimeError, TimeSource};
use tether_proto::{Header, Message, MAX_DATAGRAM};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, info};

/// The host's time: the system clock, formatted by the core.
#[derive(Debug)]
pub struct HostTime([u8; tether_proto::time::TIME_TEXT_MAX]);

impl TimeSource for HostTime {
    fn time(&mut self, format: &str) -> Result<(u64, &str), TimeError> {
        let ms = crate::timefmt::unix_ms();
        let text = tether_proto::time::format_time(ms, format, &mut self.0)?;
        Ok((ms, text))
    }
}

/// Answer one datagram into `out` with the host's clock.
pub fn answer(dgram: &[u8], out: &mut [u8]) -> Answer {
    datagram::answer(
        dgram,
        out,
        &mut HostTime([0; tether_proto::time::TIME_TEXT_MAX]),
    )
}

/// A log line for one answer: the outcome and, for an Error, its text.
fn describe(a: &Answer, reply: &[u8]) -> String {
    let text = match reply
        .get(tether_proto::wire::PREFIX_LEN..)
        .map(Header::parse)
    {
        Some(Ok(Header {
            message: Message::Error { message, .. },
            ..
        })) if a.outcome.is_error() => message,
        _ => "",
    };
    match a.outcome {
        Outcome::Served(k) => format!("{k:?} -> ok"),
        Outcome::Ignored(k) => format!("{k:?} ignored (replies are never answered)"),
        o => format!("{o:?}: {text}"),
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
        let a = answer(&buf[..n], &mut out);
        let reply = &out[..a.len];
        let what = describe(&a, reply);
        info!(
            "{peer} udp {what} ({} bytes in, {:.3} ms)",
            n,
            start.elapsed().as_secs_f64() * 1e3
        );
        if !reply.is_empty() {
            if let Err(e) = sock.send_to(reply, peer).await {
                debug!("udp send to {peer} failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::{encode_frame, ErrorCode};

    fn ask(d: &[u8], out: &mut [u8]) -> (usize, String) {
        let a = answer(d, out);
        (a.len, describe(&a, &out[..a.len]))
    }

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
            let (n, what) = ask(d, &mut out);
            assert!(n > 0, "every datagram is answered: {what}");
            assert!(
                n <= (d.len() + datagram::SLACK).min(MAX_DATAGRAM),
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
            let (n, what) = ask(&request(m), &mut out);
            assert_eq!(n, 0, "{what}");
        }
        // "%s" is 2 bytes of format and 10 of text: fine once, refused when
        // repeated past the slack.
        let (n, what) = ask(&request(Message::Time { format: "%s" }), &mut out);
        assert!(what.ends_with("ok"), "{what}");
        assert!(n > 0);
        let (_, what) = ask(
            &request(Message::Time {
                format: &"%s".repeat(12),
            }),
            &mut out,
        );
        assert!(what.contains("no amplification"), "{what}");
        let (_, what) = ask(&request(Message::Time { format: "%Q" }), &mut out);
        assert!(what.contains("invalid time format"), "{what}");
    }
}

//! The datagram services (ping, echo, time) on UDP: one whole frame with an
//! empty body per datagram, each way.

use std::sync::Arc;

use tether_proto::codec::{encode_frame, Decoder, Event, Limits};
use tether_proto::{ErrorCode, Header, Message, MAX_DATAGRAM};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::conn::clip;
use crate::timefmt;

/// Answer one datagram into `out`; `None` means stay silent.
pub fn answer<'o>(dgram: &[u8], out: &'o mut [u8]) -> (Option<&'o [u8]>, String) {
    let mut hbuf = [0u8; MAX_DATAGRAM];
    let reply_err = |out: &'o mut [u8], id: u32, code: ErrorCode, msg: &str| {
        let h = Header::new(
            id,
            Message::Error {
                code,
                message: clip(msg, 400),
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
        Ok(f) if f.len() <= MAX_DATAGRAM => {
            let n = f.len();
            out[..n].copy_from_slice(f);
            (Some(&out[..n]), format!("{what} -> ok"))
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

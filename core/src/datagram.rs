//! The UDP datagram service (section 2.3 of `PROTOCOL.md`), shared by the
//! device and the host: one whole frame with an empty body per datagram,
//! each way; Ping, Echo and Time only.
//!
//! [`answer`] owns the protocol: parsing, every refusal rule, the reply
//! encoding and the anti-amplification rule. Datagrams are not
//! authenticated, so a reply is never longer than the datagram it answers
//! plus [`SLACK`] bytes (Ping and Echo replies are exactly as long as their
//! request; a Time reply that would break the bound is replaced by
//! `TOO_LARGE`, and error texts are clipped), and a reply (Pong, EchoReply,
//! TimeReply, Error) is never answered, so two peers cannot be made to
//! bounce datagrams between them. The caller keeps the socket, its clock
//! (a [`TimeSource`]) and its statistics or logs.

use crate::codec::{encode_frame, DecodeError};
use crate::message::{EncodeError, ErrorCode, Header, Kind, Message};
use crate::text::Text;
pub use crate::time::TimeError;
use crate::wire::{Flags, Prefix, PrefixRepr, PREFIX_LEN};
use crate::MAX_DATAGRAM;

/// A reply datagram is at most this many bytes longer than its request.
pub const SLACK: usize = 96;

/// Bytes of an Error frame besides its text: prefix, request id (5 at
/// most), kind, code (3 at most) and the text's length (2 for up to 16 KiB).
const ERROR_OVERHEAD: usize = PREFIX_LEN + 5 + 1 + 3 + 2;

/// The wall clock and `strftime` of the side answering `Time` requests.
pub trait TimeSource {
    /// Unix milliseconds (or milliseconds since boot, without a wall clock)
    /// and the time formatted with `format` (empty selects the default).
    fn time(&mut self, format: &str) -> Result<(u64, &str), TimeError>;
}

/// What [`answer`] did with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not a frame (short, bad prefix or checksum, wrong length, sealed,
    /// too long): refused with request id 0.
    NotAFrame(ErrorCode),
    /// A frame whose header does not parse: refused.
    BadHeader(ErrorCode),
    /// A reply or an Error: never answered (the reply length is 0).
    Ignored(Kind),
    /// A request answered with its reply.
    Served(Kind),
    /// A request of this kind refused with an Error frame.
    Refused(Kind, ErrorCode),
}

impl Outcome {
    /// Whether the reply (if any) is an Error frame.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Outcome::NotAFrame(_) | Outcome::BadHeader(_) | Outcome::Refused(..)
        )
    }
}

/// The reply to one datagram: `out[..len]` (0: send nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Length of the reply written to the start of `out`.
    pub len: usize,
    /// What the datagram was and what was done with it.
    pub outcome: Outcome,
}

/// Encode `EchoReply` with `text` upper-cased (ASCII), without a copy of the
/// text: the frame is encoded as is, the text bytes (the header's tail) are
/// upper-cased in place and the checksum is recomputed.
pub fn encode_echo_reply<'b>(
    request_id: u32,
    text: &str,
    buf: &'b mut [u8],
) -> Result<&'b [u8], EncodeError> {
    let len = encode_frame(
        &Header::new(request_id, Message::EchoReply { text }),
        &[],
        buf,
    )?
    .len();
    let (prefix, header) = buf[..len].split_at_mut(PREFIX_LEN);
    let hlen = header.len();
    header[hlen - text.len()..].make_ascii_uppercase();
    let repr = PrefixRepr {
        version: crate::wire::VERSION,
        flags: Flags::empty(),
        header_len: hlen as u16,
        body_len: 0,
    };
    repr.emit(&mut Prefix::new_unchecked(prefix), header);
    Ok(&buf[..len])
}

/// Why a datagram is not a frame: the code and text to refuse it with.
type Refusal = (ErrorCode, Msg);

/// A refusal's text (short: datagram replies are clipped to the budget anyway).
type Msg = Text<96>;

fn msg(args: core::fmt::Arguments<'_>) -> Msg {
    let mut t = Msg::new();
    let _ = core::fmt::Write::write_fmt(&mut t, args);
    t
}

/// A datagram split into checked header bytes and body.
fn split(d: &[u8]) -> Result<(&[u8], &[u8]), Refusal> {
    let bad = |m: &str| (ErrorCode::BAD_FRAME, msg(format_args!("{m}")));
    if d.len() > MAX_DATAGRAM {
        return Err((
            ErrorCode::TOO_LARGE,
            msg(format_args!(
                "datagram of {} bytes exceeds the limit of {MAX_DATAGRAM}",
                d.len()
            )),
        ));
    }
    let p = Prefix::new_checked(d).map_err(|_| bad("datagram shorter than a frame prefix"))?;
    let repr = PrefixRepr::parse(&p).map_err(|e| {
        let e = DecodeError::from(e);
        (e.code(), msg(format_args!("not a tether frame: {e}")))
    })?;
    if repr.flags.contains(Flags::SEALED) {
        return Err((
            ErrorCode::UNEXPECTED,
            msg(format_args!("sealed frames are not accepted over UDP")),
        ));
    }
    if repr.frame_len() != d.len() as u64 {
        return Err(bad(
            "datagram length does not match its frame (one whole frame per datagram)",
        ));
    }
    let hlen = usize::from(repr.header_len);
    let header = &d[PREFIX_LEN..PREFIX_LEN + hlen];
    if !p.verify_checksum(header) {
        return Err(bad("frame checksum mismatch"));
    }
    Ok((header, &d[PREFIX_LEN + hlen..]))
}

use crate::text::clip;

/// Answer one datagram into `out` (at most [`MAX_DATAGRAM`] bytes of it, and
/// never more than the datagram's length plus [`SLACK`]). `time` answers
/// `Time` requests.
pub fn answer(datagram: &[u8], out: &mut [u8], time: &mut dyn TimeSource) -> Answer {
    let budget = (datagram.len() + SLACK).min(MAX_DATAGRAM).min(out.len());
    let limit = MAX_DATAGRAM.min(out.len());
    let out = &mut out[..budget];
    let error = |out: &mut [u8], id: u32, code: ErrorCode, m: &str| {
        let message = clip(m, budget.saturating_sub(ERROR_OVERHEAD));
        let h = Header::new(id, Message::Error { code, message });
        encode_frame(&h, &[], out).map_or(0, |f| f.len())
    };
    let (hbytes, body) = match split(datagram) {
        Ok(x) => x,
        Err((code, m)) => {
            let len = error(out, 0, code, m.as_str());
            return Answer {
                len,
                outcome: Outcome::NotAFrame(code),
            };
        }
    };
    let h = match Header::parse(hbytes) {
        Ok(h) => h,
        Err(e) => {
            let m = msg(format_args!("{e}"));
            let len = error(out, e.request_id.unwrap_or(0), e.code(), m.as_str());
            return Answer {
                len,
                outcome: Outcome::BadHeader(e.code()),
            };
        }
    };
    let id = h.request_id;
    let kind = h.message.kind();
    let refuse = |out: &mut [u8], code: ErrorCode, m: Msg| Answer {
        len: error(out, id, code, m.as_str()),
        outcome: Outcome::Refused(kind, code),
    };
    if matches!(
        h.message,
        Message::Pong { .. }
            | Message::EchoReply { .. }
            | Message::TimeReply { .. }
            | Message::Error { .. }
    ) {
        return Answer {
            len: 0,
            outcome: Outcome::Ignored(kind),
        };
    }
    if !body.is_empty() {
        let m = msg(format_args!("{kind:?} frames carry no body over UDP"));
        return refuse(out, ErrorCode::UNEXPECTED, m);
    }
    let reply = match h.message {
        Message::Ping { stamp } => {
            encode_frame(&Header::new(id, Message::Pong { stamp }), &[], out)
        }
        Message::Echo { text } => encode_echo_reply(id, text, out),
        Message::Time { format } => match time.time(format) {
            Ok((unix_ms, text)) => encode_frame(
                &Header::new(id, Message::TimeReply { unix_ms, text }),
                &[],
                out,
            ),
            Err(TimeError::TooLong) => {
                let m = msg(format_args!(
                    "the formatted time is too long for a datagram reply; shorten the format"
                ));
                return refuse(out, ErrorCode::TOO_LARGE, m);
            }
            Err(TimeError::BadFormat { .. }) => {
                let m = msg(format_args!(
                    "invalid time format '{}': use %Y %m %d %H %M %S %j %y %e %a %b %F %T %s %3f %Z %z %%",
                    crate::text::clip(format, 32)
                ));
                return refuse(out, ErrorCode::INVALID_HEADER, m);
            }
        },
        _ => {
            let m = msg(format_args!(
                "{kind:?} is not served over UDP (only Ping, Echo and Time are)"
            ));
            return refuse(out, ErrorCode::UNEXPECTED, m);
        }
    };
    match reply.map(|f| f.len()) {
        Ok(len) => Answer {
            len,
            outcome: Outcome::Served(kind),
        },
        Err(e) => {
            let needed = match e {
                EncodeError::BufferTooSmall { needed } => needed,
                _ => usize::MAX,
            };
            let m = if needed > limit {
                msg(format_args!(
                    "the reply would not fit in one datagram of {limit} bytes"
                ))
            } else {
                msg(format_args!(
                    "a {needed}-byte reply is more than the request plus {SLACK} bytes (no amplification)"
                ))
            };
            refuse(out, ErrorCode::TOO_LARGE, m)
        }
    }
}

/// Encode the request `h` as one datagram into `out`: one whole unsealed
/// frame with an empty body, at most [`MAX_DATAGRAM`] bytes (a longer one is
/// refused with [`EncodeError::BufferTooSmall`]). The asking side's half of
/// the service; the host's `tether ping/echo/time` and the tests use it.
pub fn encode_request<'b>(h: &Header<'_>, out: &'b mut [u8]) -> Result<&'b [u8], EncodeError> {
    let room = out.len().min(MAX_DATAGRAM);
    encode_frame(h, &[], &mut out[..room])
}

/// The header of the reply datagram `d`, checked as [`answer`] checks a
/// request: one whole unsealed frame, at most [`MAX_DATAGRAM`] bytes, its
/// checksum valid, no body, a header that parses. `Err` carries the code
/// that names what is wrong (`BAD_FRAME` for bytes that are not one whole
/// frame, for instance).
pub fn parse_reply(d: &[u8]) -> Result<Header<'_>, ErrorCode> {
    let (header, body) = split(d).map_err(|(code, _)| code)?;
    if !body.is_empty() {
        return Err(ErrorCode::UNEXPECTED);
    }
    Header::parse(header).map_err(|e| e.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed time; `%c` formats as 24 bytes, `%Q` is a bad format.
    struct Fixed([u8; 256]);

    impl TimeSource for Fixed {
        fn time(&mut self, format: &str) -> Result<(u64, &str), TimeError> {
            let (f, mut n, mut i) = (format.as_bytes(), 0, 0);
            while i < f.len() {
                let piece: &[u8] = match (f[i], f.get(i + 1)) {
                    (b'%', Some(b'c')) => b"Sun Nov 22 04:38:41 2026",
                    (b'%', Some(b'Q')) => return Err(TimeError::BadFormat { at: i }),
                    _ => &f[i..i + 1],
                };
                i += if piece.len() == 1 { 1 } else { 2 };
                let buf = self.0.get_mut(n..n + piece.len());
                buf.ok_or(TimeError::TooLong)?.copy_from_slice(piece);
                n += piece.len();
            }
            Ok((7, core::str::from_utf8(&self.0[..n]).unwrap()))
        }
    }

    fn req(id: u32, m: Message<'_>, buf: &mut [u8]) -> usize {
        encode_frame(&Header::new(id, m), &[], buf).unwrap().len()
    }

    /// Answer `d`; the reply parsed (prefix checked), and the outcome.
    fn ask<'o>(d: &[u8], out: &'o mut [u8]) -> (Option<Header<'o>>, Outcome) {
        let a = answer(d, out, &mut Fixed([0; 256]));
        assert!(a.len <= (d.len() + SLACK).min(MAX_DATAGRAM), "{a:?}");
        if a.len == 0 {
            return (None, a.outcome);
        }
        let Ok((h, body)) = split(&out[..a.len]) else {
            panic!("the reply is not one whole frame")
        };
        assert!(body.is_empty());
        (Some(Header::parse(h).unwrap()), a.outcome)
    }

    fn error(h: Option<Header<'_>>) -> (u32, ErrorCode) {
        match h {
            Some(Header {
                request_id,
                message: Message::Error { code, .. },
            }) => (request_id, code),
            h => panic!("expected an Error, got {h:?}"),
        }
    }

    #[test]
    fn serves_ping_echo_time() {
        let (mut d, mut out) = ([0u8; 256], [0u8; MAX_DATAGRAM]);
        let n = req(1, Message::Ping { stamp: 42 }, &mut d);
        let (h, o) = ask(&d[..n], &mut out);
        assert_eq!(h, Some(Header::new(1, Message::Pong { stamp: 42 })));
        assert_eq!(o, Outcome::Served(Kind::Ping));
        let n = req(2, Message::Echo { text: "Hi, ü!" }, &mut d);
        let (h, _) = ask(&d[..n], &mut out);
        let m = Message::EchoReply { text: "HI, ü!" };
        assert_eq!(h, Some(Header::new(2, m)));
        let n = req(3, Message::Time { format: "at %c" }, &mut d);
        let (h, _) = ask(&d[..n], &mut out);
        let m = Message::TimeReply {
            unix_ms: 7,
            text: "at Sun Nov 22 04:38:41 2026",
        };
        assert_eq!(h, Some(Header::new(3, m)));
    }

    #[test]
    fn refuses_what_is_not_a_frame() {
        let mut out = [0u8; MAX_DATAGRAM];
        let (mut d, long) = ([0u8; 64], [0u8; MAX_DATAGRAM + 1]);
        let n = req(5, Message::Ping { stamp: 1 }, &mut d);
        let cut = d;
        let mut flipped = d;
        flipped[n - 1] ^= 1;
        let mut sealed = d;
        sealed[3] |= Flags::SEALED.bits();
        let cases: [(&[u8], ErrorCode); 7] = [
            (b"", ErrorCode::BAD_FRAME),
            (b"definitely not a frame", ErrorCode::BAD_FRAME),
            (&cut[..n - 1], ErrorCode::BAD_FRAME),
            (&d[..n + 1], ErrorCode::BAD_FRAME),
            (&flipped[..n], ErrorCode::BAD_FRAME),
            (&sealed[..n], ErrorCode::UNEXPECTED),
            (&long[..], ErrorCode::TOO_LARGE),
        ];
        for (d, code) in cases {
            let (h, o) = ask(d, &mut out);
            assert_eq!(error(h), (0, code), "{d:?}");
            assert_eq!(o, Outcome::NotAFrame(code));
        }
    }

    #[test]
    fn refuses_other_kinds_and_bodies_and_ignores_replies() {
        let (mut d, mut out) = ([0u8; 256], [0u8; MAX_DATAGRAM]);
        let n = req(9, Message::Stat { path: "x" }, &mut d);
        let (h, o) = ask(&d[..n], &mut out);
        assert_eq!(error(h), (9, ErrorCode::UNEXPECTED));
        assert_eq!(o, Outcome::Refused(Kind::Stat, ErrorCode::UNEXPECTED));
        let h = Header::new(4, Message::Ping { stamp: 1 });
        let n = encode_frame(&h, b"body", &mut d).unwrap().len();
        let (h, _) = ask(&d[..n], &mut out);
        assert_eq!(error(h), (4, ErrorCode::UNEXPECTED));
        let n = req(6, Message::Time { format: "%Q" }, &mut d);
        let (h, _) = ask(&d[..n], &mut out);
        assert_eq!(error(h), (6, ErrorCode::INVALID_HEADER));
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
            let kind = m.kind();
            let n = req(7, m, &mut d);
            assert_eq!(ask(&d[..n], &mut out), (None, Outcome::Ignored(kind)));
        }
    }

    #[test]
    fn caps_replies_at_the_request_plus_the_slack() {
        let (mut d, mut out) = ([0u8; MAX_DATAGRAM], [0u8; MAX_DATAGRAM]);
        // 4 x 24 bytes of text for 8 of format: within the slack.
        let n = req(1, Message::Time { format: "%c%c%c%c" }, &mut d);
        assert!(matches!(
            ask(&d[..n], &mut out).0,
            Some(Header {
                message: Message::TimeReply { .. },
                ..
            })
        ));
        // 5 x 24 bytes for 10: over it, refused whole, not cut.
        let n = req(
            2,
            Message::Time {
                format: "%c%c%c%c%c",
            },
            &mut d,
        );
        let (h, o) = ask(&d[..n], &mut out);
        assert_eq!(o, Outcome::Refused(Kind::Time, ErrorCode::TOO_LARGE));
        let Some(Header {
            message: Message::Error { message, .. },
            ..
        }) = h
        else {
            panic!()
        };
        assert!(message.contains("no amplification"), "{message}");
        // Longer than the time source's buffer.
        let xs = [b'x'; 300];
        let f = core::str::from_utf8(&xs).unwrap();
        let n = req(3, Message::Time { format: f }, &mut d);
        assert_eq!(error(ask(&d[..n], &mut out).0), (3, ErrorCode::TOO_LARGE));
        // A reply that does not fit the caller's buffer; the error does.
        let n = req(4, Message::Echo { text: &f[..200] }, &mut d);
        let (h, _) = ask(&d[..n], &mut out[..100]);
        assert_eq!(error(h), (4, ErrorCode::TOO_LARGE));
        // Error texts are clipped to the slack: the shortest datagrams
        // get the longest texts.
        for len in 0..40 {
            let a = answer(&d[..len], &mut out, &mut Fixed([0; 256]));
            assert!(a.len > 0 && a.len <= len + SLACK, "{len}: {a:?}");
        }
    }

    #[test]
    fn requests_encode_and_replies_parse() {
        let (mut d, mut out) = ([0u8; MAX_DATAGRAM], [0u8; MAX_DATAGRAM]);
        let n = encode_request(&Header::new(3, Message::Echo { text: "hi" }), &mut d)
            .unwrap()
            .len();
        let a = answer(&d[..n], &mut out, &mut Fixed([0; 256]));
        let reply = Header::new(3, Message::EchoReply { text: "HI" });
        assert_eq!(parse_reply(&out[..a.len]), Ok(reply));
        // Too long for one datagram, whatever the buffer.
        let long = [b'x'; MAX_DATAGRAM];
        let text = core::str::from_utf8(&long).unwrap();
        let mut big = [0u8; 2 * MAX_DATAGRAM];
        assert!(matches!(
            encode_request(&Header::new(1, Message::Echo { text }), &mut big),
            Err(EncodeError::BufferTooSmall { .. })
        ));
        // Not one whole frame, cut short, with a body, sealed.
        assert_eq!(parse_reply(b"not a frame"), Err(ErrorCode::BAD_FRAME));
        assert_eq!(parse_reply(&out[..a.len - 1]), Err(ErrorCode::BAD_FRAME));
        let m = encode_frame(&Header::new(1, Message::Pong { stamp: 1 }), b"x", &mut d)
            .unwrap()
            .len();
        assert_eq!(parse_reply(&d[..m]), Err(ErrorCode::UNEXPECTED));
        out[3] |= Flags::SEALED.bits();
        assert_eq!(parse_reply(&out[..a.len]), Err(ErrorCode::UNEXPECTED));
    }
}

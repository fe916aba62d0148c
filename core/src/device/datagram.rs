//! The UDP service: one whole frame per datagram, Ping, Echo and Time only.

use crate::codec::{encode_frame, DecodeError};
use crate::message::{EncodeError, ErrorCode, Header, Message};
use crate::wire::{Flags, Prefix, PrefixRepr, PREFIX_LEN};
use crate::MAX_DATAGRAM;

use super::clock::{format_time, Clock};
use super::commands::Commands;
use super::store::Store;
use super::{msg, Device, Msg};

/// Longest formatted time a device sends.
pub(crate) const TIME_TEXT_MAX: usize = 128;

/// Encode `EchoReply` with `text` upper-cased (ASCII), without a copy of the
/// text: the frame is encoded as is, the text bytes (the header's tail) are
/// upper-cased in place and the checksum is recomputed.
pub(crate) fn encode_echo_reply<'b>(
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

/// Why a datagram is not a frame: the code and message to answer with.
type Refusal = (ErrorCode, Msg);

/// A datagram split into checked header bytes and body.
fn split(d: &[u8]) -> Result<(&[u8], &[u8]), Refusal> {
    let bad = |m: &str| (ErrorCode::BAD_FRAME, msg(format_args!("{m}")));
    let p = Prefix::new_checked(d).map_err(|_| bad("datagram shorter than a frame prefix"))?;
    let repr = PrefixRepr::parse(&p).map_err(|e| {
        let e = DecodeError::from(e);
        (e.code(), msg(format_args!("{e}")))
    })?;
    if repr.flags.contains(Flags::SEALED) {
        return Err((
            ErrorCode::UNEXPECTED,
            msg(format_args!("sealed frames are not accepted over UDP")),
        ));
    }
    let hlen = usize::from(repr.header_len);
    if repr.frame_len() != d.len() as u64 {
        return Err(bad("datagram length does not match its frame"));
    }
    let header = &d[PREFIX_LEN..PREFIX_LEN + hlen];
    if !p.verify_checksum(header) {
        return Err(bad("frame checksum mismatch"));
    }
    Ok((header, &d[PREFIX_LEN + hlen..]))
}

impl<S: Store, C: Clock, K: Commands> Device<S, C, K> {
    /// Answer one UDP datagram: the reply is written to `out` (at most
    /// [`MAX_DATAGRAM`] bytes are used) and its length returned; 0 means no
    /// reply (the datagram was itself a reply or an Error, which are never
    /// answered, so two peers cannot loop).
    pub fn handle_datagram(&mut self, datagram: &[u8], now_ms: u64, out: &mut [u8]) -> usize {
        self.stats.datagrams += 1;
        self.stats.bytes_in += datagram.len() as u64;
        let cap = out.len().min(MAX_DATAGRAM);
        let out = &mut out[..cap];
        let n = self.datagram_reply(datagram, now_ms, out);
        if n > 0 {
            self.stats.frames_out += 1;
            self.stats.bytes_out += n as u64;
        }
        n
    }

    fn datagram_reply(&mut self, datagram: &[u8], now_ms: u64, out: &mut [u8]) -> usize {
        let (hbytes, body) = match split(datagram) {
            Ok(x) => x,
            Err((code, m)) => {
                self.stats.bad_frames += 1;
                return self.datagram_error(0, code, m.as_str(), out);
            }
        };
        self.stats.frames_in += 1;
        let h = match Header::parse(hbytes) {
            Ok(h) => h,
            Err(e) => {
                self.stats.bad_frames += 1;
                let m = msg(format_args!("{e}"));
                return self.datagram_error(e.request_id.unwrap_or(0), e.code(), m.as_str(), out);
            }
        };
        let id = h.request_id;
        let kind = h.message.kind();
        if matches!(
            h.message,
            Message::Pong { .. }
                | Message::EchoReply { .. }
                | Message::TimeReply { .. }
                | Message::Error { .. }
        ) {
            return 0;
        }
        if !body.is_empty() {
            let m = msg(format_args!("{kind:?} frames carry no body"));
            return self.datagram_error(id, ErrorCode::UNEXPECTED, m.as_str(), out);
        }
        let mut text = [0u8; TIME_TEXT_MAX];
        let reply = match h.message {
            Message::Ping { stamp } => {
                encode_frame(&Header::new(id, Message::Pong { stamp }), &[], out).map(|f| f.len())
            }
            Message::Echo { text } => encode_echo_reply(id, text, out).map(|f| f.len()),
            Message::Time { format } => {
                let unix_ms = self.time_ms(now_ms);
                let Some(t) = format_time(unix_ms, format, &mut text) else {
                    let m = msg(format_args!(
                        "formatted time longer than {TIME_TEXT_MAX} bytes"
                    ));
                    return self.datagram_error(id, ErrorCode::TOO_LARGE, m.as_str(), out);
                };
                encode_frame(
                    &Header::new(id, Message::TimeReply { unix_ms, text: t }),
                    &[],
                    out,
                )
                .map(|f| f.len())
            }
            _ => {
                let m = msg(format_args!(
                    "{kind:?} is not served over UDP (only Ping, Echo and Time)"
                ));
                return self.datagram_error(id, ErrorCode::UNEXPECTED, m.as_str(), out);
            }
        };
        match reply {
            Ok(n) => n,
            Err(e) => {
                let needed = match e {
                    EncodeError::BufferTooSmall { needed } => needed,
                    _ => 0,
                };
                let m = msg(format_args!(
                    "reply of {needed} bytes exceeds the datagram limit of {} bytes",
                    out.len()
                ));
                self.datagram_error(id, ErrorCode::TOO_LARGE, m.as_str(), out)
            }
        }
    }

    fn datagram_error(&mut self, id: u32, code: ErrorCode, message: &str, out: &mut [u8]) -> usize {
        self.stats.errors_sent += 1;
        encode_frame(&Header::new(id, Message::Error { code, message }), &[], out)
            .map(|f| f.len())
            .unwrap_or(0)
    }
}

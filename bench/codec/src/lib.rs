//! The two codecs the codec microbenchmark compares, each as one
//! encode-then-decode of a whole frame held in memory:
//!
//! * [`tether`]: the real thing, `tether_proto`'s `encode_head` into a
//!   caller buffer and the sans-IO `Decoder` (header parsed in place, body
//!   bytes borrowed from the input).
//! * [`seed`]: the design tether grew from: a 4-byte big-endian length, a
//!   JSON header (serde_json, the body length inside it), then the body.
//!   Two ways of writing it: [`seed::roundtrip_naive`] as such code is
//!   usually written (`serde_json::to_vec`, a fresh frame `Vec`, an owned
//!   header), and [`seed::roundtrip_reuse`], the kindest version (one reused
//!   output buffer, strings borrowed from the input).
//!
//! Every round trip returns a checksum of what it decoded, so nothing can be
//! optimised away and the benchmark can assert the frames survived.

/// The frames measured: Ping, Stat of a short path, and 1 KiB of Data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// `Ping { stamp }`, no body.
    Ping,
    /// `Stat { path: "fw/image.bin" }`, no body.
    Stat,
    /// `Data` with a 1024-byte body.
    Data1k,
}

impl Sample {
    /// All samples, in table order.
    pub const ALL: [Sample; 3] = [Sample::Ping, Sample::Stat, Sample::Data1k];

    /// Name used in benchmark ids and the results table.
    pub fn name(self) -> &'static str {
        match self {
            Sample::Ping => "ping",
            Sample::Stat => "stat",
            Sample::Data1k => "data-1k",
        }
    }

    /// The body this sample carries.
    pub fn body(self) -> &'static [u8] {
        static BODY: [u8; 1024] = {
            let mut b = [0u8; 1024];
            let mut i = 0;
            while i < b.len() {
                b[i] = (i * 31 % 251) as u8;
                i += 1;
            }
            b
        };
        match self {
            Sample::Data1k => &BODY,
            _ => &[],
        }
    }
}

/// Path carried by the Stat sample.
pub const STAT_PATH: &str = "fw/image.bin";
/// Stamp carried by the Ping sample.
pub const PING_STAMP: u64 = 0x0123_4567_89ab_cdef;

fn fold(acc: u64, bytes: &[u8]) -> u64 {
    // Cheap and order-sensitive: first, last and length of every slice.
    let (Some(&a), Some(&b)) = (bytes.first(), bytes.last()) else {
        return acc.rotate_left(5) ^ 0x9e37;
    };
    acc.rotate_left(5) ^ (bytes.len() as u64) ^ (u64::from(a) << 8) ^ (u64::from(b) << 16)
}

pub mod tether {
    //! tether's codec: prefix + postcard header into a caller buffer, sans-IO decoder.
    use super::{fold, Sample, PING_STAMP, STAT_PATH};
    use tether_proto::codec::{encode_frame, Decoder, Event, Limits};
    use tether_proto::{Header, Message};

    /// Buffers a connection owns for its whole life (allocated once).
    #[derive(Debug)]
    pub struct Buffers {
        out: Vec<u8>,
        dec: Decoder<Vec<u8>>,
    }

    impl Default for Buffers {
        fn default() -> Self {
            let limits = Limits {
                max_header: 512,
                max_body: 256 * 1024,
            };
            Buffers {
                out: vec![0; 4096],
                dec: Decoder::new(vec![0; 512], limits),
            }
        }
    }

    fn header(s: Sample, id: u32) -> Header<'static> {
        let message = match s {
            Sample::Ping => Message::Ping { stamp: PING_STAMP },
            Sample::Stat => Message::Stat { path: STAT_PATH },
            Sample::Data1k => Message::Data,
        };
        Header::new(id, message)
    }

    /// Encode sample `s` as request `id`, decode it again; a checksum of what was decoded.
    pub fn roundtrip(b: &mut Buffers, s: Sample, id: u32) -> u64 {
        let Buffers { out, dec } = b;
        let frame = encode_frame(&header(s, id), s.body(), out).expect("encode");
        let mut input: &[u8] = frame;
        let mut acc = 0u64;
        loop {
            let (used, ev) = dec.handle_bytes(input);
            let rest = &input[used..];
            match ev.expect("decode") {
                Some(Event::Header(f)) => {
                    let h = f.parse().expect("parse");
                    acc = fold(acc, &h.request_id.to_le_bytes());
                    acc ^= match h.message {
                        Message::Ping { stamp } => stamp,
                        Message::Stat { path } => fold(0, path.as_bytes()),
                        Message::Data => 1,
                        _ => panic!("unexpected message"),
                    };
                }
                Some(Event::Body(bytes)) => acc = fold(acc, bytes),
                Some(Event::End { .. }) => return acc,
                None => panic!("frame incomplete"),
            }
            input = rest;
        }
    }
}

pub mod seed {
    //! The seed design: `u32` big-endian header length | JSON header | body.
    use super::{fold, Sample, PING_STAMP, STAT_PATH};
    use serde::{Deserialize, Serialize};

    /// The seed's header, owned, as it is usually written.
    #[derive(Debug, Serialize, Deserialize)]
    pub struct Header {
        /// Request id.
        pub id: u32,
        /// The message.
        pub msg: Msg,
        /// Bytes of body after the header.
        pub body_len: u64,
    }

    /// The seed's messages (the three measured), owned.
    #[derive(Debug, Serialize, Deserialize)]
    pub enum Msg {
        /// Liveness probe.
        Ping {
            /// Echoed stamp.
            stamp: u64,
        },
        /// Describe a path.
        Stat {
            /// The path.
            path: String,
        },
        /// File bytes in the body.
        Data,
    }

    /// The same header with its strings borrowed from the input.
    #[derive(Debug, Serialize, Deserialize)]
    pub struct HeaderRef<'a> {
        /// Request id.
        pub id: u32,
        /// The message.
        #[serde(borrow)]
        pub msg: MsgRef<'a>,
        /// Bytes of body after the header.
        pub body_len: u64,
    }

    /// The messages with borrowed strings.
    #[derive(Debug, Serialize, Deserialize)]
    pub enum MsgRef<'a> {
        /// Liveness probe.
        Ping {
            /// Echoed stamp.
            stamp: u64,
        },
        /// Describe a path.
        Stat {
            /// The path.
            path: &'a str,
        },
        /// File bytes in the body.
        Data,
    }

    fn split(frame: &[u8]) -> (&[u8], &[u8]) {
        let n = u32::from_be_bytes(frame[..4].try_into().expect("length")) as usize;
        frame[4..].split_at(n)
    }

    /// As usually written: `serde_json::to_vec`, a fresh frame, an owned header.
    pub fn roundtrip_naive(s: Sample, id: u32) -> u64 {
        let body = s.body();
        let msg = match s {
            Sample::Ping => Msg::Ping { stamp: PING_STAMP },
            Sample::Stat => Msg::Stat {
                path: STAT_PATH.to_string(),
            },
            Sample::Data1k => Msg::Data,
        };
        let hdr = Header {
            id,
            msg,
            body_len: body.len() as u64,
        };
        let json = serde_json::to_vec(&hdr).expect("encode");
        let mut frame = Vec::with_capacity(4 + json.len() + body.len());
        frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
        frame.extend_from_slice(&json);
        frame.extend_from_slice(body);

        let (hbytes, rest) = split(&frame);
        let h: Header = serde_json::from_slice(hbytes).expect("decode");
        let body = &rest[..h.body_len as usize];
        let acc = fold(0, &h.id.to_le_bytes());
        let acc = acc
            ^ match h.msg {
                Msg::Ping { stamp } => stamp,
                Msg::Stat { path } => fold(0, path.as_bytes()),
                Msg::Data => 1,
            };
        if body.is_empty() {
            acc
        } else {
            fold(acc, body)
        }
    }

    /// The kindest version: one reused output buffer, borrowed strings.
    pub fn roundtrip_reuse(out: &mut Vec<u8>, s: Sample, id: u32) -> u64 {
        let body = s.body();
        let msg = match s {
            Sample::Ping => MsgRef::Ping { stamp: PING_STAMP },
            Sample::Stat => MsgRef::Stat { path: STAT_PATH },
            Sample::Data1k => MsgRef::Data,
        };
        let hdr = HeaderRef {
            id,
            msg,
            body_len: body.len() as u64,
        };
        out.clear();
        out.extend_from_slice(&[0; 4]);
        serde_json::to_writer(&mut *out, &hdr).expect("encode");
        let n = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&n.to_be_bytes());
        out.extend_from_slice(body);

        let (hbytes, rest) = split(out);
        let h: HeaderRef<'_> = serde_json::from_slice(hbytes).expect("decode");
        let body = &rest[..h.body_len as usize];
        let acc = fold(0, &h.id.to_le_bytes());
        let acc = acc
            ^ match h.msg {
                MsgRef::Ping { stamp } => stamp,
                MsgRef::Stat { path } => fold(0, path.as_bytes()),
                MsgRef::Data => 1,
            };
        if body.is_empty() {
            acc
        } else {
            fold(acc, body)
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn all_codecs_decode_what_they_encoded() {
        let mut t = tether::Buffers::default();
        let mut out = Vec::new();
        for s in Sample::ALL {
            let a = tether::roundtrip(&mut t, s, 7);
            let b = seed::roundtrip_naive(s, 7);
            let c = seed::roundtrip_reuse(&mut out, s, 7);
            assert_eq!(a, b, "{s:?}");
            assert_eq!(a, c, "{s:?}");
        }
    }
}

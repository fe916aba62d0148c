//! # tether-proto
//!
//! The protocol core of tether: one framed protocol for running commands and
//! moving files that runs unchanged on a microcontroller and on a PC.
//!
//! * [`wire`]: the fixed 18-byte frame prefix (zero-copy view and typed repr).
//! * [`message`]: the postcard header ([`Header`], [`Message`]) and error codes.
//! * [`codec`]: the sans-IO [`Decoder`] (bytes in, events out, bodies never
//!   buffered) and [`encode_head`].
//! * [`datagram`]: the UDP service (Ping, Echo, Time), shared by device and host.
//! * [`http`]: a read-only HTTP/1.1 status page responder, sans-IO like the codec.
//! * [`io`]: blocking and async drivers over `embedded-io`.
//!
//! `no_std` and heap-free by default; the caller owns every buffer. The byte
//! layout is specified in `PROTOCOL.md`, whose test vectors are checked by
//! this crate's tests.
//!
//! ```
//! use tether_proto::{codec::{encode_frame, Decoder, Event, Limits}, Header, Message};
//! let mut out = [0u8; 64];
//! let frame = encode_frame(&Header::new(1, Message::Echo { text: "hi" }), &[], &mut out).unwrap();
//! let mut hbuf = [0u8; 64];
//! let mut dec = Decoder::new(&mut hbuf[..], Limits::HANDSHAKE);
//! let (used, event) = dec.handle_bytes(frame);
//! assert_eq!(used, frame.len());
//! let Ok(Some(Event::Header(f))) = event else { panic!() };
//! assert_eq!(f.parse().unwrap().message, Message::Echo { text: "hi" });
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "alloc")]
#[allow(unused_extern_crates)]
extern crate alloc;

pub mod client;
pub mod codec;
pub mod datagram;
pub mod device;
pub mod handshake;
pub mod http;
pub mod io;
pub mod message;
pub mod outgoing;
pub mod server;
pub mod text;
pub mod time;
pub mod wire;

pub use codec::{encode_frame, encode_head, DecodeError, Decoder, Event, Frame, Limits};
pub use io::FrameError;
pub use message::{
    Argv, Caps, Command, Digest, EncodeError, Entry, EntryKind, ErrorCode, Exec, ExitStatus,
    Header, HeaderError, HeaderErrorKind, Hello, HelloAck, Kind, Message, Proof, Stream,
};

/// The TCP and UDP port tether listens on by default.
pub const DEFAULT_PORT: u16 = 7117;

/// Largest header a host peer accepts (device peers usually accept less).
pub const HOST_MAX_HEADER: u16 = 8 * 1024;

/// Largest body per frame a host peer accepts.
pub const HOST_MAX_CHUNK: u32 = 256 * 1024;

/// Largest UDP datagram (one whole frame) tether sends or accepts: an
/// Ethernet MTU minus IPv4 and UDP headers, so no datagram is fragmented.
pub const MAX_DATAGRAM: usize = 1472;

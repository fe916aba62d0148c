//! # tether-host
//!
//! The PC side of tether: a concurrent server ([`server`]) and the client
//! operations ([`client`]) behind the `tether` binary.
//!
//! * One TCP connection carries one handshake (`Hello`/`HelloAck`) and then
//!   any number of requests; the server runs the requests of a connection
//!   concurrently, and every connection in its own task, so a slow or
//!   stalled peer only ever delays itself.
//! * Both sides are drivers of the core's sans-IO engines: the server of
//!   [`tether_proto::server::ServerConn`], the client of
//!   [`tether_proto::client::ClientConn`]. They move bytes and do the file
//!   and process work the engine asks for; every protocol rule is in core.
//! * With a pre-shared key ([`key`]) both sides authenticate in the
//!   handshake (the core's sans-IO [`tether_proto::handshake`], the same
//!   state machine the device runs) and every later frame is sealed with a
//!   per-direction sequence number, or, when the client requires it
//!   (`--encrypt`) and the server offers it, encrypted whole with
//!   ChaCha20-Poly1305; see `docs/SECURITY.md`.
//! * File transfers stream in constant memory: a blocking thread reads or
//!   writes chunks while the network side sends or receives, and the
//!   engine hashes with SHA-256 as bytes pass: never a second pass.
//! * Files are confined to the served root with `cap-std`.
//!
//! Errors are [`Error`] (for clients) and [`server::files::Fail`] (what a
//! request answers); every message says what to do next.

pub mod addr;
pub mod client;
pub mod error;
pub mod key;
pub mod platform;
pub mod progress;
pub mod reader;
pub mod server;
pub mod timefmt;

pub use error::Error;

/// This software's name and version, sent as the handshake agent.
pub const AGENT: &str = concat!("tether/", env!("CARGO_PKG_VERSION"));

/// Suffix of partial files: `LOCAL.tether-part` on a client,
/// `.NAME.tether-part` beside the destination on a server.
pub const PART_SUFFIX: &str = ".tether-part";

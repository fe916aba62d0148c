//! A TCP relay on 127.0.0.1 between a client and a server, standing in for
//! whoever sits on the network path: it forwards every connection, records
//! the bytes going each way, and can flip one bit at a chosen offset of
//! each connection's stream in either direction.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What the relay does to the bytes it forwards.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tamper {
    /// Flip bit 2 of the byte at this offset of each client-to-server stream.
    pub to_server: Option<usize>,
    /// Flip bit 2 of the byte at this offset of each server-to-client stream.
    pub to_client: Option<usize>,
}

/// A running relay; stops accepting when dropped (connections in progress
/// run to their end).
#[derive(Debug)]
pub struct Relay {
    /// The relay's port: connect clients to `127.0.0.1:port`.
    pub port: u16,
    up: Arc<Mutex<Vec<u8>>>,
    down: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Relay every connection to `127.0.0.1:server_port`, faithfully.
    pub fn faithful(server_port: u16) -> Relay {
        Relay::start(server_port, Tamper::default())
    }

    /// Relay every connection to `127.0.0.1:server_port`, tampering as told.
    pub fn start(server_port: u16, tamper: Tamper) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = l.local_addr().expect("relay address").port();
        let up = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (u, d, st) = (up.clone(), down.clone(), stop.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = c else { continue };
                let Ok(s) = TcpStream::connect(("127.0.0.1", server_port)) else {
                    continue;
                };
                let _ = c.set_nodelay(true);
                let _ = s.set_nodelay(true);
                let (Ok(c2), Ok(s2)) = (c.try_clone(), s.try_clone()) else {
                    continue;
                };
                pump(c, s2, tamper.to_server, u.clone());
                pump(s, c2, tamper.to_client, d.clone());
            }
        });
        Relay {
            port,
            up,
            down,
            stop,
        }
    }

    /// `127.0.0.1:PORT`, for the client's HOST argument.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every byte sent from clients to the server so far (all connections,
    /// as forwarded, so after any flip).
    pub fn to_server(&self) -> Vec<u8> {
        self.up.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every byte sent from the server to clients so far.
    pub fn to_client(&self) -> Vec<u8> {
        self.down.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copy `from` to `to` on a thread, flipping the byte at `flip`, appending
/// what was forwarded to `record`; closes `to`'s sending side at the end.
fn pump(mut from: TcpStream, mut to: TcpStream, flip: Option<usize>, record: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        let mut seen = 0usize;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(at) = flip {
                if at >= seen && at < seen + n {
                    buf[at - seen] ^= 0x04;
                }
            }
            seen += n;
            record
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&buf[..n]);
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// One frame found in a recorded stream: its flags and where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireFrame {
    /// The prefix's flags byte.
    pub flags: u8,
    /// Header length.
    pub header_len: usize,
    /// Body length.
    pub body_len: usize,
    /// Offset of its first byte in the stream.
    pub start: usize,
    /// Offset just past its last byte (tag included).
    pub end: usize,
}

/// Walk a recorded stream of whole frames by their prefixes (magic, flags,
/// lengths; a sealed frame has a 16-byte tag), without decoding anything
/// else. Stops at the first bytes that do not start a frame.
pub fn frames(stream: &[u8]) -> Vec<WireFrame> {
    use tether_proto::wire::{PREFIX_LEN, TAG_LEN};
    let mut out = Vec::new();
    let mut at = 0usize;
    while stream.len() >= at + PREFIX_LEN && stream[at..at + 2] == *b"TH" {
        let p = &stream[at..at + PREFIX_LEN];
        let flags = p[3];
        let header = u16::from_le_bytes([p[4], p[5]]) as usize;
        let mut body = [0u8; 8];
        body.copy_from_slice(&p[6..14]);
        let body = u64::from_le_bytes(body) as usize;
        let tag = if flags & 1 != 0 { TAG_LEN } else { 0 };
        let end = (at + PREFIX_LEN + header + tag).saturating_add(body);
        if end > stream.len() {
            break;
        }
        out.push(WireFrame {
            flags,
            header_len: header,
            body_len: body,
            start: at,
            end,
        });
        at = end;
    }
    out
}

/// Whether `needle` occurs anywhere in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

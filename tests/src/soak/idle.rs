//! A client that holds many handshaken, idle connections: plain blocking
//! sockets, the core's [`ClientHandshake`], [`encode_frame`] and
//! [`Decoder`]. For the idle-connection waves and for filling a server's
//! connection limit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tether_proto::codec::{encode_frame, Decoder, Event, Limits};
use tether_proto::handshake::ClientHandshake;
use tether_proto::{Caps, Header, Message};

/// Connections that completed the handshake and then say nothing.
#[derive(Debug)]
pub struct IdleConns {
    conns: Vec<TcpStream>,
}

impl IdleConns {
    /// Open `n` connections to 127.0.0.1:`port`, one after the other, each
    /// handshaken (Hello, HelloAck; unauthenticated).
    pub fn open(port: u16, n: usize) -> Result<IdleConns, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let c =
                connect(addr, i as u64).map_err(|e| format!("idle connection {i} of {n}: {e}"))?;
            conns.push(c);
        }
        Ok(IdleConns { conns })
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Ping every `step`-th connection; all must answer Pong.
    pub fn ping_every(&mut self, step: usize) -> Result<usize, String> {
        let mut n = 0;
        for (i, c) in self.conns.iter_mut().enumerate().step_by(step.max(1)) {
            send(c, &Header::new(1, Message::Ping { stamp: i as u64 }))
                .map_err(|e| format!("ping {i}: {e}"))?;
            reply(c, |h| match h.message {
                Message::Pong { stamp } if stamp == i as u64 => Ok(()),
                m => Err(format!("connection {i} answered a Ping with {m:?}")),
            })?;
            n += 1;
        }
        Ok(n)
    }
}

fn connect(addr: SocketAddr, i: u64) -> Result<TcpStream, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut nonce = [0x5a; 16];
    nonce[..8].copy_from_slice(&i.to_le_bytes());
    let mut hs = ClientHandshake::new(None, nonce, 4096, 64 * 1024, Caps::empty(), "soak-idle");
    send(&mut s, &Header::new(0, Message::Hello(hs.hello().clone())))?;
    reply(&mut s, |h| match h.message {
        Message::HelloAck(ack) => match hs.handle_hello_ack(&ack) {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("the server requires a key".into()),
            Err(e) => Err(format!("handshake: {e:?}")),
        },
        m => Err(format!("expected HelloAck, got {m:?}")),
    })?;
    Ok(s)
}

fn send(s: &mut TcpStream, h: &Header<'_>) -> Result<(), String> {
    let mut buf = [0u8; 1024];
    let f = encode_frame(h, &[], &mut buf).map_err(|e| format!("encode: {e:?}"))?;
    s.write_all(f).map_err(|e| e.to_string())
}

/// Read one whole frame and judge its header with `f`.
fn reply(
    s: &mut TcpStream,
    mut f: impl FnMut(Header<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let mut hbuf = [0u8; 4096];
    let limits = Limits {
        max_header: 4096,
        max_body: 1 << 16,
    };
    let mut dec = Decoder::new(&mut hbuf[..], limits);
    let (mut buf, mut at, mut have) = ([0u8; 4096], 0, 0);
    let mut verdict = Err("a frame without a header".to_string());
    loop {
        // Feed what is buffered (possibly nothing: a due event comes out of
        // an empty call); read only when the decoder wants more.
        let (used, ev) = dec.handle_bytes(&buf[at..have]);
        at += used;
        match ev.map_err(|e| format!("bad frame: {e:?}"))? {
            Some(Event::Header(fr)) => {
                verdict = fr
                    .parse()
                    .map_err(|e| format!("bad header: {e:?}"))
                    .and_then(&mut f);
            }
            Some(Event::End { .. }) => return verdict,
            Some(Event::Body(_)) => {}
            None if at < have => return Err("the decoder made no progress".into()),
            None => {
                have = s.read(&mut buf).map_err(|e| e.to_string())?;
                at = 0;
                if have == 0 {
                    return Err("the server closed the connection".into());
                }
            }
        }
    }
}

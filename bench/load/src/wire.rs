//! A minimal client over the core alone: the handshake (and Auth with a key)
//! and a Ping, for connections that then sit idle. The buffers live only
//! during the handshake; a held connection is just its socket.

use std::io;
use std::net::SocketAddr;

use tether_proto::codec::{encode_head, Decoder, Event, Limits};
use tether_proto::handshake::{ClientHandshake, SessionKeys};
use tether_proto::wire::{Flags, TAG_LEN};
use tether_proto::{Caps, ErrorCode, Header, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a connection did not come up.
#[derive(Debug)]
pub enum Refusal {
    /// The server answered BUSY.
    Busy,
    /// Anything else.
    Other(String),
}

impl From<io::Error> for Refusal {
    fn from(e: io::Error) -> Self {
        Refusal::Other(e.to_string())
    }
}

fn refused(m: &Message<'_>, wanted: &str) -> Refusal {
    match m {
        Message::Error { code, .. } if *code == ErrorCode::BUSY => Refusal::Busy,
        Message::Error { code, message } => Refusal::Other(format!("error {}: {message}", code.0)),
        other => Refusal::Other(format!("expected {wanted}, got {:?}", other.kind())),
    }
}

/// A connection during the handshake: socket, decoder and receive buffer.
pub struct Conn {
    s: TcpStream,
    dec: Decoder<[u8; 512]>,
    rx: [u8; 2048],
    start: usize,
    end: usize,
    keys: Option<SessionKeys>,
}

impl Conn {
    /// Connect to `addr` and complete the handshake (with Auth if `key`).
    pub async fn open(addr: SocketAddr, key: Option<[u8; 32]>) -> Result<Conn, Refusal> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut c = Conn {
            s,
            dec: Decoder::new([0; 512], Limits::HANDSHAKE),
            rx: [0; 2048],
            start: 0,
            end: 0,
            keys: None,
        };
        let nonce = tether_host::key::nonce()?;
        let mut hs = ClientHandshake::new(key, nonce, 512, 1024, Caps::empty(), "tether-bench");
        c.send(Header::new(0, Message::Hello(hs.hello().clone())))
            .await?;
        let proof = c
            .next_frame(|m| match m {
                Message::HelloAck(ack) => hs
                    .handle_hello_ack(ack)
                    .map_err(|e| Refusal::Other(format!("HelloAck: {e:?}"))),
                other => Err(refused(other, "HelloAck")),
            })
            .await??;
        c.dec.set_limits(Limits {
            max_header: 512,
            max_body: 1024,
        });
        if let Some(proof) = proof {
            c.send(Header::new(0, Message::Auth(proof))).await?;
            let keys = c
                .next_frame(|m| match m {
                    Message::AuthOk(p) => hs
                        .handle_auth_ok(p)
                        .map_err(|e| Refusal::Other(format!("AuthOk: {e:?}"))),
                    other => Err(refused(other, "AuthOk")),
                })
                .await??;
            c.keys = Some(keys);
        }
        Ok(c)
    }

    /// Send Ping and wait for its Pong.
    pub async fn ping(&mut self, stamp: u64) -> Result<(), Refusal> {
        self.send(Header::new(1, Message::Ping { stamp })).await?;
        self.next_frame(|m| match m {
            Message::Pong { stamp: s } if *s == stamp => Ok(()),
            other => Err(refused(other, "Pong")),
        })
        .await?
    }

    /// The socket alone, for holding the connection open.
    pub fn into_stream(self) -> TcpStream {
        self.s
    }

    async fn send(&mut self, h: Header<'_>) -> io::Result<()> {
        let mut buf = [0u8; 512];
        let flags = if self.keys.is_some() {
            Flags::SEALED
        } else {
            Flags::empty()
        };
        let n = encode_head(&h, 0, flags, &mut buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e:?}")))?
            .len();
        let mut len = n;
        if let Some(k) = &mut self.keys {
            let tag = k.seal.begin(&buf[..n]).finish();
            buf[n..n + TAG_LEN].copy_from_slice(&tag);
            len += TAG_LEN;
        }
        self.s.write_all(&buf[..len]).await
    }

    /// Read one whole frame; `f` sees its message. (A sealed reply's tag is
    /// not checked: this is a load generator, not a client to trust.)
    async fn next_frame<T>(&mut self, mut f: impl FnMut(&Message<'_>) -> T) -> io::Result<T> {
        let mut out = None;
        loop {
            // Events can be due with no input left (End after a header
            // that ended the input): feed until the decoder wants more.
            loop {
                let (used, ev) = self.dec.handle_bytes(&self.rx[self.start..self.end]);
                self.start += used;
                match ev {
                    Err(e) => {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
                    }
                    Ok(None) => break,
                    Ok(Some(Event::Header(fr))) => {
                        let h = fr.parse().map_err(|e| {
                            io::Error::new(io::ErrorKind::InvalidData, e.to_string())
                        })?;
                        out = Some(f(&h.message));
                    }
                    Ok(Some(Event::Body(_))) => {}
                    Ok(Some(Event::End { .. })) => {
                        return out.ok_or_else(|| io::Error::other("frame without header"))
                    }
                }
            }
            let n = self.s.read(&mut self.rx).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            self.start = 0;
            self.end = n;
        }
    }
}

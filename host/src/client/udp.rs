//! `tether echo`, `tether time`, `tether ping`: one datagram each way, with
//! a timeout per attempt and retries; replies are matched by request id.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tether_proto::datagram;
use tether_proto::{EncodeError, Header, Message, MAX_DATAGRAM};
use tokio::net::UdpSocket;
use tracing::debug;

use super::resolve;
use crate::addr::HostSpec;
use crate::error::Error;

/// Timeout and retries of datagram requests.
#[derive(Debug, Clone)]
pub struct UdpOpts {
    /// How long to wait for each reply.
    pub timeout: Duration,
    /// Extra attempts after a timeout.
    pub retries: u32,
}

/// A reply and where it came from.
#[derive(Debug)]
pub struct Reply {
    /// The reply datagram (checked; read with [`Reply::message`]).
    datagram: Vec<u8>,
    /// Round-trip time of the answered attempt.
    pub rtt: Duration,
    /// Attempts used.
    pub attempts: u32,
    /// The server's address.
    pub from: SocketAddr,
}

/// An open datagram socket to one server.
#[derive(Debug)]
pub struct UdpClient {
    sock: UdpSocket,
    host: String,
    addr: SocketAddr,
}

impl Reply {
    /// The reply's message (it parsed when it arrived).
    pub fn message(&self) -> Message<'_> {
        datagram::parse_reply(&self.datagram).map_or(Message::Data, |h| h.message)
    }
}

impl UdpClient {
    /// Resolve `host` and open a socket to it.
    pub async fn open(host: &HostSpec) -> Result<Self, Error> {
        // A server listening on IPv4 only is the common case (the default
        // --listen is 127.0.0.1): prefer an IPv4 address, as UDP cannot tell
        // a wrong family from a lost datagram.
        let addrs = resolve(host).await?;
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .copied()
            .unwrap_or(addrs[0]);
        let local: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0".parse().expect("valid")
        } else {
            "[::]:0".parse().expect("valid")
        };
        let connect_err = |source| Error::Connect {
            host: host.to_string(),
            source,
        };
        let sock = UdpSocket::bind(local).await.map_err(connect_err)?;
        sock.connect(addr).await.map_err(connect_err)?;
        Ok(UdpClient {
            sock,
            host: host.to_string(),
            addr,
        })
    }

    /// Send `msg` and wait for the reply with the same request id, retrying.
    pub async fn request(&self, msg: Message<'_>, opts: &UdpOpts) -> Result<Reply, Error> {
        let id = rand::random::<u32>().max(1);
        let mut out = [0u8; MAX_DATAGRAM];
        let kind = msg.kind();
        let frame = match datagram::encode_request(&Header::new(id, msg), &mut out) {
            Ok(f) => f,
            Err(EncodeError::BufferTooSmall { needed }) => {
                return Err(Error::Usage(format!(
                    "the {kind:?} request would be a {needed}-byte datagram, more than the {MAX_DATAGRAM} bytes one datagram may hold; shorten it"
                )))
            }
            Err(e) => return Err(Error::Usage(format!("cannot encode the request: {e}"))),
        };
        let mut buf = vec![0u8; 65536];
        let mut why = String::new();
        for attempt in 1..=opts.retries + 1 {
            let sent = Instant::now();
            if let Err(e) = self.sock.send(frame).await {
                return Err(Error::Connect {
                    host: self.host.clone(),
                    source: e,
                });
            }
            let deadline = tokio::time::Instant::now() + opts.timeout;
            loop {
                let r = tokio::time::timeout_at(deadline, self.sock.recv(&mut buf)).await;
                let n = match r {
                    Err(_) => break,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        // ICMP port unreachable: nothing listens (yet); wait out the attempt.
                        why = " (the port is unreachable: nothing listens on UDP there)".into();
                        tokio::time::sleep_until(deadline).await;
                        break;
                    }
                    Ok(Err(e)) => {
                        return Err(Error::Connect {
                            host: self.host.clone(),
                            source: e,
                        })
                    }
                    Ok(Ok(n)) => n,
                };
                if n > MAX_DATAGRAM {
                    return Err(Error::Protocol {
                        host: self.host.clone(),
                        detail: format!(
                            "a reply of {n} bytes exceeds the {MAX_DATAGRAM}-byte datagram limit"
                        ),
                    });
                }
                match datagram::parse_reply(&buf[..n]) {
                    Ok(h) => {
                        if h.request_id != id {
                            debug!(
                                "ignoring {:?} for request {}",
                                h.message.kind(),
                                h.request_id
                            );
                            continue;
                        }
                        if let Message::Error { code, message } = h.message {
                            return Err(Error::Remote {
                                code,
                                message: message.to_string(),
                            });
                        }
                        return Ok(Reply {
                            datagram: buf[..n].to_vec(),
                            rtt: sent.elapsed(),
                            attempts: attempt,
                            from: self.addr,
                        });
                    }
                    Err(code) => debug!("ignoring a datagram that is not a tether reply ({code})"),
                }
            }
            if attempt <= opts.retries {
                debug!("no reply within {:?}; retrying", opts.timeout);
            }
        }
        Err(Error::NoReply {
            host: self.host.clone(),
            attempts: opts.retries + 1,
            timeout: opts.timeout,
            why,
        })
    }
}

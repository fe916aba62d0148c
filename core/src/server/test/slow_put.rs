//! Engine tests against a backend whose work takes time (as a host's does,
//! on blocking threads): bytes in, bytes out.

extern crate std;

use std::vec;
use std::vec::Vec;

use core::task::Poll;

use sha2::{Digest as _, Sha256};

use crate::codec::{encode_frame, Decoder, Event, Limits};
use crate::message::{Entry, Header, Hello, Message};
use crate::server::*;

/// A backend that stores one upload in memory and answers its create only
/// once told to (`ready`).
#[derive(Default)]
struct Slow {
    created: Option<Req>,
    ready: bool,
    data: Vec<u8>,
    committed: bool,
}

impl Backend for Slow {
    fn start(&mut self, req: Req, work: Start<'_>) {
        match work {
            Start::Create { .. } => self.created = Some(req),
            Start::Commit { .. } => self.committed = true,
            _ => {}
        }
    }
    fn poll_stat(&mut self, _: Req) -> Poll<Result<Entry<'_>, Failure<'_>>> {
        Poll::Ready(Err(Failure::new(ErrorCode::NOT_FOUND, "none")))
    }
    fn poll_list(&mut self, _: Req) -> Poll<Option<Result<Entry<'_>, Failure<'_>>>> {
        Poll::Ready(None)
    }
    fn poll_open(&mut self, _: Req) -> Poll<Result<Opened, Failure<'_>>> {
        Poll::Ready(Err(Failure::new(ErrorCode::NOT_FOUND, "none")))
    }
    fn poll_prefix(&mut self, _: Req) -> Poll<Result<Sha256, Failure<'_>>> {
        Poll::Pending
    }
    fn poll_read(&mut self, _: Req, _: u64, _: &mut [u8]) -> Poll<Result<usize, Failure<'_>>> {
        Poll::Pending
    }
    fn poll_unchanged(&mut self, _: Req) -> Poll<Result<(), Failure<'_>>> {
        Poll::Pending
    }
    fn poll_create(&mut self, _: Req) -> Poll<Result<Created, Failure<'_>>> {
        if !self.ready {
            return Poll::Pending;
        }
        Poll::Ready(Ok(Created {
            offset: 0,
            hasher: None,
        }))
    }
    fn write(&mut self, _: Req, offset: u64, data: &[u8]) -> Result<(), Failure<'_>> {
        assert_eq!(offset, self.data.len() as u64);
        self.data.extend_from_slice(data);
        Ok(())
    }
    fn poll_commit(&mut self, _: Req) -> Poll<Result<(), Failure<'_>>> {
        Poll::Ready(Ok(()))
    }
    fn poll_remove(&mut self, _: Req) -> Poll<Result<(), Failure<'_>>> {
        Poll::Pending
    }
    fn poll_exec(&mut self, _: Req, _: &mut [u8]) -> Poll<Result<Output, Failure<'_>>> {
        Poll::Pending
    }
    fn kill(&mut self, _: Req, _: Kill) {}
    fn end(&mut self, _: Req, _: End) {}
    fn time_ms(&mut self, now_ms: u64) -> u64 {
        now_ms
    }
    fn refused(&mut self, _: Peer, _: u64) -> Option<u64> {
        None
    }
    fn auth_failed(&mut self, _: Peer, _: u64) -> Option<u64> {
        None
    }
    fn auth_succeeded(&mut self, _: Peer) {}
}

fn frame(h: Header<'_>, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 1024];
    let n = encode_frame(&h, body, &mut b).unwrap().len();
    b.truncate(n);
    b
}

/// Every frame in `out` as (request id, kind) and the Errors' codes.
fn replies(out: &[u8]) -> Vec<(u32, crate::message::Kind, Option<ErrorCode>)> {
    let mut hbuf = [0u8; 512];
    let mut dec = Decoder::new(&mut hbuf[..], Limits::HANDSHAKE);
    let mut v = Vec::new();
    let mut at = 0;
    while at < out.len() {
        let (n, ev) = dec.handle_bytes(&out[at..]);
        at += n;
        if let Ok(Some(Event::Header(f))) = ev {
            let h = f.parse().unwrap();
            let code = match h.message {
                Message::Error { code, .. } => Some(code),
                _ => None,
            };
            v.push((h.request_id, h.message.kind(), code));
        }
    }
    v
}

#[test]
fn a_put_is_answered_before_the_frames_after_it_are_read() {
    use crate::message::Kind;
    let cfg = ServerConfig {
        caps: Caps::FILES.union(Caps::WRITE),
        ..ServerConfig::default()
    };
    let bufs = Buffers {
        header: vec![0u8; 512],
        staging: vec![0u8; 1024],
        frame: None,
    };
    let mut conn: ServerConn<Vec<u8>, 2> = ServerConn::new(cfg, bufs);
    let mut bk = Slow::default();
    let mut out = vec![0u8; 4096];
    conn.handle_accept(0, Peer::UNKNOWN, [1; 16], &mut bk);
    let hello = Hello {
        version: 1,
        max_header: 512,
        max_chunk: 512,
        caps: Caps::empty(),
        nonce: [2; 16],
        agent: "test",
    };
    let h = frame(Header::new(0, Message::Hello(hello)), &[]);
    assert_eq!(conn.handle_bytes(0, &h, &mut bk), h.len());
    let n = conn.poll_transmit(0, &mut out, &mut bk);
    assert_eq!(replies(&out[..n]), [(0, Kind::HelloAck, None)]);

    // Put, Data and Done in one piece, while the backend takes its time.
    let data = b"sent at once";
    let put = Message::Put {
        path: "a.bin",
        size: data.len() as u64,
        force: false,
        resume: false,
    };
    let mut input = frame(Header::new(7, put), &[]);
    let put_len = input.len();
    let data_frame = frame(Header::new(7, Message::Data), data);
    let data_head = data_frame.len() - data.len();
    input.extend(&data_frame);
    let sha256 = Some(Sha256::digest(data).into());
    let done = Message::Done {
        bytes: data.len() as u64,
        sha256,
    };
    input.extend(frame(Header::new(7, done), &[]));
    // The Put and the Data's header are taken: its body waits for PutReady.
    let took = conn.handle_bytes(1, &input, &mut bk);
    assert_eq!(took, put_len + data_head);
    assert_eq!(conn.handle_bytes(2, &input[took..], &mut bk), 0);
    assert_eq!(conn.poll_transmit(2, &mut out, &mut bk), 0);
    // The create is done: PutReady, then the Data and the Done are taken.
    bk.ready = true;
    conn.handle_ready(bk.created.unwrap());
    let rest = &input[took..];
    assert_eq!(conn.handle_bytes(3, rest, &mut bk), rest.len());
    let n = conn.poll_transmit(3, &mut out, &mut bk);
    assert_eq!(
        replies(&out[..n]),
        [(7, Kind::PutReady, None), (7, Kind::Done, None)]
    );
    assert_eq!(bk.data, data);
    assert!(bk.committed);
}

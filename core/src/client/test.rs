//! The client engine against the server engine (a device's, over its RAM
//! store) in memory: a seeded pair whose byte streams are cut at random
//! places, so a protocol bug reproduces from its seed.

extern crate std;

use std::string::String;
use std::vec;
use std::vec::Vec;

use core::task::Poll;

use sha2::{Digest as _, Sha256};

use super::*;
use crate::device::{Config, Device, DeviceConn, OffsetClock, Peer, RamStore, Store as _};
use crate::message::{Argv, Command, ErrorCode, ExitStatus, Stream};

const KEY: [u8; 32] = [0x42; 32];

type Dev = Device<RamStore<Vec<u8>, 8>, OffsetClock, ()>;

/// A small xorshift generator: the pair's only source of choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// An upload source over bytes in memory (pending at random).
struct Mem {
    data: Vec<u8>,
    rng: Rng,
    pending: Vec<ReqId>,
}

impl Uploads for Mem {
    fn hash_prefix(&mut self, req: ReqId, len: u64) -> Poll<Result<Sha256, LocalFailure<'_>>> {
        if self.rng.below(3) == 0 {
            self.pending.push(req);
            return Poll::Pending;
        }
        let mut h = Sha256::new();
        h.update(&self.data[..len as usize]);
        Poll::Ready(Ok(h))
    }
    fn read(
        &mut self,
        req: ReqId,
        offset: u64,
        buf: &mut [u8],
    ) -> Poll<Result<usize, LocalFailure<'_>>> {
        if self.rng.below(4) == 0 {
            self.pending.push(req);
            return Poll::Pending;
        }
        let at = offset as usize;
        let n = buf
            .len()
            .min(self.data.len() - at)
            .min(1 + self.rng.below(2000));
        buf[..n].copy_from_slice(&self.data[at..at + n]);
        Poll::Ready(Ok(n))
    }
    fn check_unchanged(&mut self, _: ReqId) -> Poll<Result<(), LocalFailure<'_>>> {
        Poll::Ready(Ok(()))
    }
}

/// What the client saw, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Connected(bool, bool),
    Closed(String),
    Pong(u64),
    Echo(String),
    Output(Stream, Vec<u8>),
    Exit(ExitStatus),
    Entry(String, u64),
    GetStarted(u64, u64),
    Data(Vec<u8>),
    PutStarted(u64),
    Finished(u64, Option<[u8; 32]>),
    Mismatch,
    Failed(Origin, ErrorCode, String),
}

fn own(e: &Event<'_>) -> Seen {
    match e {
        Event::Connected(i) => Seen::Connected(i.authenticated, i.encrypted),
        Event::Closed(c) => Seen::Closed(std::format!("{c}")),
        Event::Pong { stamp, .. } => Seen::Pong(*stamp),
        Event::Echo { text, .. } => Seen::Echo((*text).into()),
        Event::Time { text, .. } => Seen::Echo((*text).into()),
        Event::Output { stream, bytes, .. } => Seen::Output(*stream, bytes.to_vec()),
        Event::Exit { status, .. } => Seen::Exit(*status),
        Event::Entry { entry, .. } => Seen::Entry(entry.name.into(), entry.size),
        Event::GetStarted { size, offset, .. } => Seen::GetStarted(*size, *offset),
        Event::Data { bytes, .. } => Seen::Data(bytes.to_vec()),
        Event::PutStarted { offset, .. } => Seen::PutStarted(*offset),
        Event::Finished { bytes, sha256, .. } => Seen::Finished(*bytes, *sha256),
        Event::ResumeMismatch { .. } => Seen::Mismatch,
        Event::Failed {
            origin,
            code,
            message,
            ..
        } => Seen::Failed(*origin, *code, (*message).into()),
    }
}

struct Pair {
    rng: Rng,
    dev: Dev,
    server: DeviceConn<Vec<u8>, 2>,
    client: ClientConn<Vec<u8>, 4>,
    up: Mem,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    seen: Vec<(u16, Seen)>,
    now: u64,
}

impl Pair {
    fn new(seed: u64, key: Option<[u8; 32]>, encrypt: bool) -> Pair {
        let config = Config {
            key,
            caps: Config::DEFAULT.caps.union(crate::message::Caps::ENCRYPT),
            ..Config::DEFAULT
        };
        let mut dev = Device::new(
            config,
            RamStore::new(vec![0; 64 * 1024]),
            OffsetClock { offset_ms: 0 },
            (),
            0,
        );
        let mut server: DeviceConn<Vec<u8>, 2> =
            DeviceConn::new(vec![0; 512], vec![0; 640], vec![0; 512])
                .with_frame_buffer(vec![0; 1536]);
        server.handle_accept(&mut dev, Peer::ipv4([10, 0, 0, 2]), [7; 16], 0);
        let cfg = ClientConfig {
            agent: "test/0",
            max_header: 1024,
            max_chunk: 4096,
            key,
            encrypt,
            accept_unauthenticated: false,
            handshake_timeout_ms: 10_000,
            ..ClientConfig::DEFAULT
        };
        let mut client = ClientConn::new(
            cfg,
            Buffers {
                header: vec![0; 1024],
                staging: vec![0; 2048],
                frame: Some(vec![0; 8192]),
            },
        );
        client.connect(0, [3; 16]);
        let mut rng = Rng(seed | 1);
        let up = Mem {
            data: Vec::new(),
            rng: Rng(rng.next() | 1),
            pending: Vec::new(),
        };
        Pair {
            rng,
            dev,
            server,
            client,
            up,
            to_server: Vec::new(),
            to_client: Vec::new(),
            seen: Vec::new(),
            now: 0,
        }
    }

    /// Move bytes both ways in random pieces until nothing moves.
    fn run(&mut self) {
        if self.steps(1_000_000) {
            panic!("the pair never settled");
        }
    }

    /// At most `n` rounds of moving bytes; returns whether bytes still move.
    fn steps(&mut self, n: usize) -> bool {
        for _ in 0..n {
            let mut moved = false;
            // Client output, in a random-sized buffer.
            let mut out = vec![0u8; 256 + self.rng.below(6000)];
            let n = self.client.poll_transmit(self.now, &mut out, &mut self.up);
            self.to_server.extend_from_slice(&out[..n]);
            moved |= n > 0;
            // Uploads that were pending become ready.
            for req in core::mem::take(&mut self.up.pending) {
                self.client.handle_ready(req);
                moved = true;
            }
            // Client input, in random pieces; events recorded.
            loop {
                let take = self.to_client.len().min(1 + self.rng.below(3000));
                let input = self.to_client[..take].to_vec();
                let (used, ev) = self.client.handle_bytes(self.now, &input);
                if let Some(e) = &ev {
                    let slot = match e {
                        Event::Connected(_) | Event::Closed(_) => u16::MAX,
                        Event::Pong { req, .. }
                        | Event::Echo { req, .. }
                        | Event::Time { req, .. }
                        | Event::Output { req, .. }
                        | Event::Exit { req, .. }
                        | Event::Entry { req, .. }
                        | Event::GetStarted { req, .. }
                        | Event::Data { req, .. }
                        | Event::PutStarted { req, .. }
                        | Event::Finished { req, .. }
                        | Event::ResumeMismatch { req }
                        | Event::Failed { req, .. } => req.slot,
                    };
                    self.seen.push((slot, own(e)));
                }
                self.to_client.drain(..used);
                moved |= used > 0 || ev.is_some();
                if used == 0 && ev.is_none() {
                    break;
                }
            }
            // Server input and output.
            let take = self.to_server.len().min(1 + self.rng.below(3000));
            let used = self
                .server
                .handle_bytes(&mut self.dev, &self.to_server[..take], self.now);
            self.to_server.drain(..used);
            moved |= used > 0;
            let mut out = vec![0u8; 1 + self.rng.below(2000)];
            let n = self.server.poll_transmit(&mut self.dev, &mut out, self.now);
            self.to_client.extend_from_slice(&out[..n]);
            moved |= n > 0;
            if !moved {
                return false;
            }
        }
        true
    }

    fn connect(seed: u64, key: Option<[u8; 32]>, encrypt: bool) -> Pair {
        let mut p = Pair::new(seed, key, encrypt);
        p.run();
        assert_eq!(
            p.seen.first().map(|s| &s.1),
            Some(&Seen::Connected(key.is_some(), encrypt)),
            "seed {seed}: {:?}",
            p.seen
        );
        p.seen.clear();
        p
    }

    /// A new connection to the same device, with a fresh client.
    fn reconnect(&mut self, key: Option<[u8; 32]>) {
        self.seen.clear();
        self.server.handle_close(&mut self.dev);
        self.server
            .handle_accept(&mut self.dev, Peer::ipv4([10, 0, 0, 2]), [8; 16], self.now);
        let cfg = ClientConfig {
            agent: "test/0",
            max_header: 1024,
            max_chunk: 4096,
            key,
            encrypt: false,
            accept_unauthenticated: false,
            handshake_timeout_ms: 10_000,
            ..ClientConfig::DEFAULT
        };
        self.client = ClientConn::new(
            cfg,
            Buffers {
                header: vec![0; 1024],
                staging: vec![0; 2048],
                frame: Some(vec![0; 8192]),
            },
        );
        self.client.connect(self.now, [4; 16]);
        self.to_client.clear();
        self.to_server.clear();
        self.run();
        assert!(
            matches!(self.seen.first(), Some((_, Seen::Connected(..)))),
            "{:?}",
            self.seen
        );
        self.seen.clear();
    }

    fn take(&mut self) -> Vec<Seen> {
        core::mem::take(&mut self.seen)
            .into_iter()
            .map(|s| s.1)
            .collect()
    }

    fn put(&mut self, path: &str, data: &[u8], resume: bool) -> Vec<Seen> {
        self.up.data = data.to_vec();
        self.client
            .request(Request::Put {
                path,
                size: data.len() as u64,
                force: true,
                resume,
            })
            .unwrap();
        self.run();
        self.take()
    }

    fn get(&mut self, path: &str, resume: Option<Resume>) -> (Vec<u8>, Vec<Seen>) {
        self.client.request(Request::Get { path, resume }).unwrap();
        self.run();
        let seen = self.take();
        let mut data = Vec::new();
        let mut rest = Vec::new();
        for s in seen {
            match s {
                Seen::Data(d) => data.extend(d),
                s => rest.push(s),
            }
        }
        (data, rest)
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 97) as u8).collect()
}

fn digest(d: &[u8]) -> [u8; 32] {
    Sha256::digest(d).into()
}

#[test]
fn every_request_round_trips_over_many_seeds() {
    for seed in 1..40u64 {
        for (key, encrypt) in [(None, false), (Some(KEY), false), (Some(KEY), true)] {
            let mut p = Pair::connect(seed, key, encrypt);
            p.client.request(Request::Ping { stamp: 7 }).unwrap();
            p.client.request(Request::Echo { text: "hi" }).unwrap();
            p.run();
            assert_eq!(
                p.take(),
                [Seen::Pong(7), Seen::Echo("HI".into())],
                "seed {seed}"
            );
            let data = pattern(3000 + seed as usize * 17);
            let seen = p.put("f.bin", &data, false);
            assert_eq!(
                seen,
                [
                    Seen::PutStarted(0),
                    Seen::Finished(data.len() as u64, Some(digest(&data)))
                ],
                "seed {seed}"
            );
            let (got, seen) = p.get("f.bin", None);
            assert_eq!(got, data, "seed {seed}");
            assert_eq!(
                seen,
                [
                    Seen::GetStarted(data.len() as u64, 0),
                    Seen::Finished(data.len() as u64, Some(digest(&data)))
                ],
                "seed {seed}"
            );
            let mut b = [0u8; 32];
            let argv = Argv::join(&["echo", "a", "b"], &mut b).unwrap();
            p.client
                .request(Request::Exec {
                    command: Command::Argv(argv),
                    timeout_ms: None,
                })
                .unwrap();
            p.client.request(Request::List { path: "" }).unwrap();
            p.run();
            let seen = p.take();
            assert!(
                seen.contains(&Seen::Output(Stream::Stdout, b"a b\n".to_vec())),
                "seed {seed}: {seen:?}"
            );
            assert!(
                seen.contains(&Seen::Exit(ExitStatus::Code(0))),
                "seed {seed}"
            );
            assert!(
                seen.contains(&Seen::Entry("f.bin".into(), data.len() as u64)),
                "seed {seed}"
            );
            assert!(
                seen.contains(&Seen::Finished(1, None)),
                "seed {seed}: {seen:?}"
            );
        }
    }
}

#[test]
fn a_resumed_get_checks_the_prefix_and_a_mismatch_is_reported() {
    let mut p = Pair::connect(5, Some(KEY), false);
    let data = pattern(5000);
    p.put("r.bin", &data, false);
    let mut prefix = Sha256::new();
    prefix.update(&data[..1200]);
    let (got, seen) = p.get(
        "r.bin",
        Some(Resume {
            offset: 1200,
            prefix,
        }),
    );
    assert_eq!(got, &data[1200..]);
    assert_eq!(
        seen,
        [
            Seen::GetStarted(5000, 1200),
            Seen::Finished(5000, Some(digest(&data)))
        ]
    );
    // A partial that is not a prefix of the file: cancelled, reported.
    let mut wrong = Sha256::new();
    wrong.update([0u8; 1200]);
    let (got, seen) = p.get(
        "r.bin",
        Some(Resume {
            offset: 1200,
            prefix: wrong,
        }),
    );
    assert!(
        got.is_empty(),
        "no data of a mismatched resume is handed on"
    );
    assert_eq!(seen, [Seen::Mismatch]);
    assert_eq!(p.client.in_flight(), 0);
}

#[test]
fn a_put_resumes_the_servers_partial_and_errors_end_requests() {
    let mut p = Pair::connect(9, None, false);
    p.client.request(Request::Stat { path: "nope" }).unwrap();
    p.run();
    let seen = p.take();
    assert!(
        matches!(
            &seen[..],
            [Seen::Failed(Origin::Server, ErrorCode::NOT_FOUND, _)]
        ),
        "{seen:?}"
    );
    // A put the server keeps a partial of (the connection drops mid-way).
    let data = pattern(4000);
    p.up.data = data.clone();
    p.client
        .request(Request::Put {
            path: "k.bin",
            size: 4000,
            force: true,
            resume: false,
        })
        .unwrap();
    // Let some data through, then close the server's side.
    let mut rounds = 0;
    while p
        .dev
        .store
        .partial("k.bin")
        .is_none_or(|k| k.written < 1000)
    {
        assert!(p.steps(1), "the upload ended before it could be cut");
        rounds += 1;
        assert!(rounds < 10_000);
    }
    p.server.handle_close(&mut p.dev);
    assert_eq!(p.dev.store.usage().pending, 1, "the partial is kept");
    // A new connection resumes it.
    p.reconnect(None);
    let q = &mut p;
    let seen = q.put("k.bin", &data, true);
    let Seen::PutStarted(at) = seen[0] else {
        panic!("{seen:?}")
    };
    assert!(at > 0 && at < 4000, "resumed at {at}");
    assert_eq!(seen[1], Seen::Finished(4000, Some(digest(&data))));
    let (got, _) = q.get("k.bin", None);
    assert_eq!(got, data);
}

/// What a driver that reads once `poll_transmit` gives nothing relies on:
/// a 0 from it means nothing is queued (a Done or a Cancel a round queued
/// goes out in the same call) and nothing is due but an event to take.
#[test]
fn a_quiet_server_is_probed_and_a_silent_one_given_up() {
    let mut p = Pair::connect(5, None, false);
    assert_eq!(p.client.poll_timeout(), None, "nothing in flight");
    p.client.request(Request::Stat { path: "nope" }).unwrap();
    let mut out = vec![0u8; 4096];
    p.now = 1_000;
    let n = p.client.poll_transmit(p.now, &mut out, &mut p.up);
    assert!(n > 0);
    p.to_server.extend_from_slice(&out[..n]);
    // The Stat went, no answer yet: a probe is due after the keepalive.
    let due = p.client.poll_timeout().unwrap();
    assert_eq!(due, 1_000 + u64::from(ClientConfig::DEFAULT.keepalive_ms));
    p.client.handle_timeout(due - 1);
    assert_eq!(p.client.poll_transmit(due - 1, &mut out, &mut p.up), 0);
    p.client.handle_timeout(due);
    let n = p.client.poll_transmit(due, &mut out, &mut p.up);
    // The live server answers the probe (a Pong with id 0), which the
    // client takes silently; then the Stat's answer.
    p.now = due;
    p.to_server.extend_from_slice(&out[..n]);
    p.run();
    let seen = p.take();
    assert!(
        matches!(
            seen[..],
            [Seen::Failed(Origin::Server, ErrorCode::NOT_FOUND, _)]
        ),
        "only the Stat's end is an event: {seen:?}"
    );
    // Another request, and this time the server is gone for good.
    p.client.request(Request::Stat { path: "nope" }).unwrap();
    p.now += 10;
    assert!(p.client.poll_transmit(p.now, &mut out, &mut p.up) > 0);
    let probe = p.client.poll_timeout().unwrap();
    p.client.handle_timeout(probe);
    assert!(p.client.poll_transmit(probe, &mut out, &mut p.up) > 0);
    let stall = p.client.poll_timeout().unwrap();
    assert_eq!(
        stall,
        probe + u64::from(ClientConfig::DEFAULT.stall_timeout_ms)
    );
    p.client.handle_timeout(stall);
    let (_, ev) = p.client.handle_bytes(stall, &[]);
    assert!(
        matches!(ev, Some(Event::Closed(ConnError::Stalled(20_000)))),
        "{ev:?}"
    );
    assert!(p.client.is_closed());
}

#[test]
fn poll_transmit_leaves_nothing_queued_when_it_returns_zero() {
    // `size` bytes put, or a resumed put whose partial differs.
    for (size, mismatch) in [
        (0usize, false),
        (1, false),
        (3000, false),
        (9000, false),
        (5000, true),
    ] {
        for (key, encrypt) in [(None, false), (Some(KEY), false), (Some(KEY), true)] {
            let mut p = Pair::connect(size as u64 + 1, key, encrypt);
            let data = pattern(size);
            if mismatch {
                // The server keeps a partial of other bytes.
                let other: Vec<u8> = data.iter().map(|b| b ^ 1).collect();
                p.up.data = other;
                p.client
                    .request(Request::Put {
                        path: "m.bin",
                        size: size as u64,
                        force: true,
                        resume: false,
                    })
                    .unwrap();
                while p
                    .dev
                    .store
                    .partial("m.bin")
                    .is_none_or(|k| k.written < 2000)
                {
                    assert!(p.steps(1));
                }
                p.reconnect(key);
            }
            p.up.data = data.clone();
            p.up.rng = Rng(1);
            p.client
                .request(Request::Put {
                    path: "m.bin",
                    size: size as u64,
                    force: true,
                    resume: mismatch,
                })
                .unwrap();
            // Drive it as a blocking driver would: send until poll_transmit
            // gives 0 and no event follows, and only then let the server
            // answer (never pending uploads: this source always reads).
            let mut ended = false;
            for _ in 0..10_000 {
                let mut out = vec![0u8; 4096];
                let mut events = 0;
                loop {
                    let n = p
                        .client
                        .poll_transmit(p.now, &mut out, &mut AlwaysReady(&p.up.data));
                    p.to_server.extend_from_slice(&out[..n]);
                    let (_, ev) = p.client.handle_bytes(p.now, &[]);
                    if let Some(e) = &ev {
                        events += 1;
                        ended |= matches!(
                            e,
                            Event::Finished { .. }
                                | Event::ResumeMismatch { .. }
                                | Event::Failed { .. }
                        );
                    }
                    if n == 0 && ev.is_none() {
                        break;
                    }
                }
                let _ = events;
                assert!(
                    !p.client.wants_transmit(),
                    "size {size}, mismatch {mismatch}, key {}, encrypt {encrypt}: poll_transmit gave 0 with bytes to send",
                    key.is_some()
                );
                if ended {
                    break;
                }
                // The server answers everything it got; the client reads it.
                let used = p.server.handle_bytes(&mut p.dev, &p.to_server, p.now);
                p.to_server.drain(..used);
                let mut back = vec![0u8; 65536];
                let n = p.server.poll_transmit(&mut p.dev, &mut back, p.now);
                let mut input = &back[..n];
                loop {
                    let (used, ev) = p.client.handle_bytes(p.now, input);
                    input = &input[used..];
                    if let Some(e) = &ev {
                        ended |= matches!(
                            e,
                            Event::Finished { .. }
                                | Event::ResumeMismatch { .. }
                                | Event::Failed { .. }
                        );
                    }
                    if used == 0 && ev.is_none() {
                        break;
                    }
                }
                if ended {
                    break;
                }
            }
            assert!(
                ended,
                "size {size}, mismatch {mismatch}: the put never ended"
            );
        }
    }
}

/// An upload source that never answers `Pending`.
struct AlwaysReady<'a>(&'a [u8]);

impl Uploads for AlwaysReady<'_> {
    fn hash_prefix(&mut self, _: ReqId, len: u64) -> Poll<Result<Sha256, LocalFailure<'_>>> {
        Poll::Ready(Ok(Sha256::new_with_prefix(&self.0[..len as usize])))
    }
    fn read(
        &mut self,
        _: ReqId,
        offset: u64,
        buf: &mut [u8],
    ) -> Poll<Result<usize, LocalFailure<'_>>> {
        let at = offset as usize;
        let n = buf.len().min(self.0.len() - at);
        buf[..n].copy_from_slice(&self.0[at..at + n]);
        Poll::Ready(Ok(n))
    }
    fn check_unchanged(&mut self, _: ReqId) -> Poll<Result<(), LocalFailure<'_>>> {
        Poll::Ready(Ok(()))
    }
}

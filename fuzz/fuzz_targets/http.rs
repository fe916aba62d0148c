//! The HTTP responder never panics. Whatever the bytes, however they are
//! split and whatever the output buffer, it answers with exactly one
//! response (if the bytes never make a whole request: at the request
//! deadline, or when the peer ends its side, unless it sent nothing but
//! empty lines): a status line, headers, and a body as long as its
//! Content-Length (none for HEAD); the same bytes for every split; bounded
//! in size; then a graceful close. A keyed status never shows a file name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::http::{Close, Config, FileInfo, Http, Status};

const FILES: [FileInfo<'static>; 2] = [
    FileInfo {
        name: "SECRETNAME-a.bin",
        size: 10,
    },
    FileInfo {
        name: "<SECRETNAME&'\"b>",
        size: 20,
    },
];

/// No response to this status is longer.
const MAX_RESPONSE: usize = 8 * 1024;
/// No error response is longer.
const MAX_ERROR: usize = 512;

fn status(keyed: bool) -> Status<'static> {
    let mut s = Status::new("fuzz/<1.0>&");
    s.uptime_ms = 123_456_789;
    s.unix_ms = Some(1_795_305_600_000);
    s.ip = Some([10, 0, 0, 1]);
    s.keyed = keyed;
    s.store.files = 2;
    s.store.used = 30;
    s.store.capacity = 1 << 20;
    s.counters.frames_in = u64::MAX;
    s.files = &FILES;
    s
}

fn run(data: &[u8], step: usize, out_len: usize, buf: usize, s: &Status<'_>) -> Vec<u8> {
    let mut h = Http::new(vec![0u8; buf], Config::DEFAULT);
    h.handle_accept(0);
    let mut resp = Vec::new();
    let mut out = vec![0u8; out_len];
    let mut drain = |h: &mut Http<Vec<u8>>, resp: &mut Vec<u8>| loop {
        let n = h.poll_transmit(&mut out, s);
        assert!(n <= out_len);
        if n == 0 {
            break;
        }
        resp.extend_from_slice(&out[..n]);
        assert!(resp.len() <= MAX_RESPONSE, "unbounded response");
    };
    for (i, chunk) in data.chunks(step).enumerate() {
        assert_eq!(h.handle_bytes(i as u64, chunk), chunk.len());
        drain(&mut h, &mut resp);
    }
    if h.poll_close().is_none() {
        assert!(resp.is_empty(), "a response started, then stopped");
        let due = h.poll_timeout().expect("an open request has a deadline");
        if data.len() % 2 == 0 {
            h.handle_timeout(due);
        } else {
            h.handle_eof(due - 1);
        }
        drain(&mut h, &mut resp);
    }
    assert_eq!(h.poll_close(), Some(Close::Graceful));
    assert!(!h.wants_transmit());
    resp
}

/// Whether the request (after ignored empty lines) is a HEAD.
fn is_head(mut data: &[u8]) -> bool {
    loop {
        if let Some(rest) = data.strip_prefix(b"\r\n") {
            data = rest;
        } else if let Some(rest) = data.strip_prefix(b"\n") {
            data = rest;
        } else {
            return data.starts_with(b"HEAD ");
        }
    }
}

fn check(resp: &[u8], data: &[u8], keyed: bool) {
    if resp.is_empty() {
        // Only a peer that sent nothing but empty lines, then ended, gets no response.
        assert!(data.len() % 2 == 1 && data.iter().all(|b| b"\r\n".contains(b)));
        return;
    }
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = std::str::from_utf8(&resp[..end]).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap();
    assert!(
        line.starts_with("HTTP/1.1 ") && line.as_bytes()[12] == b' ',
        "{line}"
    );
    let code: u16 = line[9..12].parse().expect("a status code");
    assert!(
        [200, 400, 404, 405, 408, 414, 431, 505].contains(&code),
        "{code}"
    );
    let len: usize = lines
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    let body = &resp[end + 4..];
    // A body as long as Content-Length, or none at all for a HEAD.
    if body.len() != len {
        assert!(
            body.is_empty() && is_head(data),
            "Content-Length {len}, body {}",
            body.len()
        );
    }
    assert!(head.contains("\r\nConnection: close"));
    if code != 200 {
        assert!(resp.len() <= MAX_ERROR);
    }
    if keyed {
        assert!(
            !resp.windows(10).any(|w| w == b"SECRETNAME"),
            "a name shown"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(ctl & 0x0f) + 1;
    let out_len = [29, 128, 536, 1500][usize::from(ctl >> 4 & 3)];
    let buf = if ctl & 0x80 != 0 { 64 } else { 256 };
    let keyed = ctl & 0x40 != 0;
    let s = status(keyed);
    let whole = run(data, data.len().max(1), 4096, buf, &s);
    let split = run(data, step, out_len, buf, &s);
    assert_eq!(whole, split, "the split changed the response");
    check(&whole, data, keyed);
});

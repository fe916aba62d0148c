//! The HTTP responder, fed byte vectors.

extern crate std;

use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

use super::*;

const FILES: [FileInfo<'static>; 2] = [
    FileInfo {
        name: "fw.bin",
        size: 1234,
    },
    FileInfo {
        name: "notes.txt",
        size: 5,
    },
];

/// 2026-11-22T00:00:00Z (a Sunday).
const T0: u64 = 1_795_305_600_000;

fn status() -> Status<'static> {
    Status {
        agent: "tether-test/1.0",
        uptime_ms: 90_061_000,
        unix_ms: Some(T0),
        ip: Some([192, 168, 69, 1]),
        led: true,
        keyed: false,
        store: StoreUse {
            used: 1239,
            capacity: 4096,
            files: 2,
            pending: 0,
            max_files: 32,
        },
        counters: Counters {
            connections: 7,
            open: 1,
            datagrams: 3,
            frames_in: 40,
            frames_out: 41,
            bytes_in: 5000,
            bytes_out: 6000,
            errors_sent: 2,
            http_requests: 9,
        },
        security: Security {
            auth_failures: 4,
            backoff_refusals: 1,
            integrity_failures: 6,
            bad_frames: 8,
            timeouts: 3,
        },
        files: &FILES,
    }
}

const BUF: usize = 256;

/// Accept at 0, feed `chunks`, then take the response `out_len` bytes at a
/// time. Returns it and how the responder wants to close.
fn serve_with(
    chunks: &[&[u8]],
    buf: usize,
    out_len: usize,
    s: &Status<'_>,
) -> (Vec<u8>, Option<Close>) {
    let mut h = Http::new(vec![0u8; buf], Config::DEFAULT);
    h.handle_accept(0);
    for c in chunks {
        assert_eq!(h.handle_bytes(1, c), c.len());
    }
    let mut resp = Vec::new();
    let mut out = vec![0u8; out_len];
    loop {
        let n = h.poll_transmit(&mut out, s);
        if n == 0 {
            break;
        }
        resp.extend_from_slice(&out[..n]);
    }
    (resp, h.poll_close())
}

fn serve(req: &[u8]) -> Vec<u8> {
    let (resp, close) = serve_with(&[req], BUF, 4096, &status());
    assert_eq!(
        close,
        Some(Close::Graceful),
        "{}",
        String::from_utf8_lossy(req)
    );
    resp
}

#[derive(Debug)]
struct Parsed {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Parsed {
    fn header(&self, name: &str) -> Option<&str> {
        let mut it = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let v = it.next().map(|(_, v)| v.as_str());
        assert!(it.next().is_none(), "{name} twice");
        v
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }
}

/// Split a response into status code, headers and body, checking the
/// framing on the way (status line, CRLF, Content-Length, Connection: close).
fn parse(resp: &[u8]) -> Parsed {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head ends with an empty line");
    let head = core::str::from_utf8(&resp[..end]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap();
    assert!(status.starts_with("HTTP/1.1 "), "{status}");
    assert_eq!(&status[12..13], " ", "{status}");
    let code: u16 = status[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(": ").expect("name: value");
            (n.to_string(), v.to_string())
        })
        .collect();
    let p = Parsed {
        code,
        headers,
        body: resp[end + 4..].to_vec(),
    };
    assert_eq!(p.header("Connection"), Some("close"));
    p
}

fn get(path: &str) -> Parsed {
    let p = parse(&serve(
        format!("GET {path} HTTP/1.1\r\nHost: 192.168.69.1\r\n\r\n").as_bytes(),
    ));
    let len: usize = p.header("Content-Length").unwrap().parse().unwrap();
    assert_eq!(len, p.body.len());
    p
}

#[test]
fn get_root_is_a_small_phone_sized_page() {
    let p = get("/");
    assert_eq!(p.code, 200);
    assert_eq!(p.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert_eq!(p.header("Date"), Some("Sun, 22 Nov 2026 00:00:00 GMT"));
    assert_eq!(p.header("Cache-Control"), Some("no-store"));
    let t = p.text();
    assert!(t.starts_with("<!DOCTYPE html>"));
    assert!(t.contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"));
    for absent in [
        "<script", "src=", "href=", "http://", "https://", "@import", "url(",
    ] {
        assert!(!t.contains(absent), "{absent} in the page");
    }
    for shown in [
        "<title>tether-test/1.0 status</title>",
        "<td>1d 01:01:01</td>",
        "<td>2026-11-22T00:00:00Z</td>",
        "<td>192.168.69.1</td>",
        "<tr><th>LED</th><td>on</td></tr>",
        "<td>1239 of 4096 bytes (30%)</td>",
        "<tr><th>Files</th><td>2 of 32</td></tr>",
        "<tr><th>Accepted since boot</th><td>7</td></tr>",
        "<tr><th>Frames in / out</th><td>40 / 41</td></tr>",
        "<tr><th>Failed authentications</th><td>4</td></tr>",
        "<tr><th>Integrity failures</th><td>6</td></tr>",
        "<tr><th>fw.bin</th><td>1234 bytes</td></tr>",
        "<tr><th>notes.txt</th><td>5 bytes</td></tr>",
        "anyone who reaches the device",
    ] {
        assert!(t.contains(shown), "{shown} missing from\n{t}");
    }
    assert!(t.ends_with("</body></html>\n"));
}

#[test]
fn without_clock_or_address_the_page_says_so_and_sends_no_date() {
    let s = Status {
        unix_ms: None,
        ip: None,
        ..Status::new("x")
    };
    let (resp, _) = serve_with(&[b"GET / HTTP/1.0\r\n\r\n"], BUF, 4096, &s);
    let p = parse(&resp);
    assert_eq!(p.header("Date"), None);
    let t = p.text();
    assert!(t.contains("<tr><th>Wall time</th><td>unknown</td></tr>"));
    assert!(t.contains("<tr><th>IP address</th><td>none</td></tr>"));
    assert!(
        t.contains("<td>0 of 0 bytes (0%)</td>"),
        "no division by zero"
    );
    assert!(t.contains("<p>No files.</p>"));
    let (resp, _) = serve_with(&[b"GET /status.json HTTP/1.0\r\n\r\n"], BUF, 4096, &s);
    let j = json_parse(&parse(&resp).text()).unwrap();
    assert_eq!(j.get("unix_ms"), Some(&J::Null));
    assert_eq!(j.get("wall_time"), Some(&J::Null));
    assert_eq!(j.get("ip"), Some(&J::Null));
    assert_eq!(j.get("files"), Some(&J::Arr(vec![])));
}

#[test]
fn status_json_is_valid_json_with_every_figure() {
    let p = get("/status.json");
    assert_eq!(p.code, 200);
    assert_eq!(p.header("Content-Type"), Some("application/json"));
    let j = json_parse(&p.text()).expect("valid JSON");
    let num = |path: &[&str]| {
        let mut v = &j;
        for k in path {
            v = v.get(k).unwrap_or_else(|| panic!("{path:?}"));
        }
        v.clone()
    };
    let n = |x: u64| J::Num(x.to_string());
    assert_eq!(num(&["agent"]), J::Str("tether-test/1.0".into()));
    assert_eq!(num(&["uptime_ms"]), n(90_061_000));
    assert_eq!(num(&["unix_ms"]), n(T0));
    assert_eq!(num(&["wall_time"]), J::Str("2026-11-22T00:00:00Z".into()));
    assert_eq!(num(&["ip"]), J::Str("192.168.69.1".into()));
    assert_eq!(num(&["led"]), J::Bool(true));
    assert_eq!(num(&["keyed"]), J::Bool(false));
    assert_eq!(num(&["store", "used"]), n(1239));
    assert_eq!(num(&["store", "capacity"]), n(4096));
    assert_eq!(num(&["store", "max_files"]), n(32));
    assert_eq!(num(&["connections", "accepted"]), n(7));
    assert_eq!(num(&["connections", "open"]), n(1));
    assert_eq!(num(&["connections", "bytes_out"]), n(6000));
    assert_eq!(num(&["connections", "http_requests"]), n(9));
    assert_eq!(num(&["security", "auth_failures"]), n(4));
    assert_eq!(num(&["security", "backoff_refusals"]), n(1));
    assert_eq!(num(&["security", "integrity_failures"]), n(6));
    assert_eq!(num(&["security", "bad_frames"]), n(8));
    assert_eq!(num(&["security", "timeouts"]), n(3));
    let file = |name: &str, size: u64| {
        J::Obj(vec![
            ("name".into(), J::Str(name.into())),
            ("size".into(), n(size)),
        ])
    };
    assert_eq!(
        num(&["files"]),
        J::Arr(vec![file("fw.bin", 1234), file("notes.txt", 5)])
    );
}

#[test]
fn head_has_the_headers_of_get_and_no_body() {
    for path in ["/", "/status.json", "/missing"] {
        let g = serve(format!("GET {path} HTTP/1.1\r\nHost: d\r\n\r\n").as_bytes());
        let h = serve(format!("HEAD {path} HTTP/1.1\r\nHost: d\r\n\r\n").as_bytes());
        let head_len = g.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(h, g[..head_len], "{path}");
        let p = parse(&h);
        assert!(p.body.is_empty());
        let len: usize = p.header("Content-Length").unwrap().parse().unwrap();
        assert_eq!(len, g.len() - head_len, "{path}");
        assert!(len > 0);
    }
}

/// Requests and the status each must get.
const CASES: &[(&[u8], u16)] = &[
    (b"GET / HTTP/1.1\r\nHost: d\r\n\r\n", 200),
    (b"GET / HTTP/1.0\r\n\r\n", 200),
    (b"GET / HTTP/1.9\r\nHost: d\r\n\r\n", 200),
    (b"\r\n\r\nGET / HTTP/1.1\nHost: d\n\n", 200),
    (b"GET /?refresh=1 HTTP/1.1\r\nHost: d\r\n\r\n", 200),
    (b"GET http://d/status.json HTTP/1.1\r\nHost: d\r\n\r\n", 200),
    (b"GET HTTP://d:80 HTTP/1.1\r\nHost: d:80\r\n\r\n", 200),
    (
        b"GET / HTTP/1.1\r\nHost: [fe80::1]:80\r\nX-Empty:\r\nA: b\tc \r\n\r\n",
        200,
    ),
    (
        b"GET / HTTP/1.1\r\nHost: d\r\nContent-Length: 3\r\n\r\nabc",
        200,
    ),
    (b"GET /nope HTTP/1.1\r\nHost: d\r\n\r\n", 404),
    (b"GET /status.json/ HTTP/1.1\r\nHost: d\r\n\r\n", 404),
    (b"GET * HTTP/1.1\r\nHost: d\r\n\r\n", 404),
    (
        b"POST / HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\nhi",
        405,
    ),
    (b"get / HTTP/1.1\r\nHost: d\r\n\r\n", 405),
    (b"DELETE /status.json HTTP/1.1\r\nHost: d\r\n\r\n", 405),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\nHost: d\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    (b"GET  / HTTP/1.1\r\nHost: d\r\n\r\n", 400),
    (b"GET / HTTP/1.1 \r\nHost: d\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),
    (b"GET / http/1.1\r\nHost: d\r\n\r\n", 400),
    (b"GET / HTTP/1.10\r\nHost: d\r\n\r\n", 400),
    (b"GET / HTTP/x.1\r\nHost: d\r\n\r\n", 400),
    (b"GET noslash HTTP/1.1\r\nHost: d\r\n\r\n", 400),
    (b"GET http://d HTTP/1\r\nHost: d\r\n\r\n", 400),
    (b"G(T / HTTP/1.1\r\nHost: d\r\n\r\n", 400),
    (b"GET /\x7f HTTP/1.1\r\nHost: d\r\n\r\n", 400),
    (b"GET /\r HTTP/1.1\r\nHost: d\r\n\r\n", 400),
    (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: d\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
    (b"\x00", 400),
    (b"GET / HTTP/1.1\r\nHost: d\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n Host: d\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : d\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: d\r\nNoColon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: d\r\n: empty\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: d\rX: bare CR\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: d\r\nX: \x01\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: d\r\nX: \x7f\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: d\r\n\r\r\n", 400),
];

#[test]
fn every_request_gets_its_status() {
    for (req, code) in CASES {
        let p = parse(&serve(req));
        let what = String::from_utf8_lossy(req);
        assert_eq!(p.code, *code, "{what:?}");
        let len: usize = p.header("Content-Length").unwrap().parse().unwrap();
        assert_eq!(len, p.body.len(), "{what:?}");
        let allow = p.header("Allow");
        assert_eq!(allow.is_some(), *code == 405, "{what:?}");
        if *code == 405 {
            assert_eq!(allow, Some("GET, HEAD"));
        }
        if *code != 200 {
            assert_eq!(p.header("Content-Type"), Some("text/plain; charset=utf-8"));
            let reason = &p.text()[4..];
            assert!(!reason.trim().is_empty(), "{what:?}");
        }
    }
}

#[test]
fn garbage_is_refused_at_its_first_byte() {
    let mut h = Http::new([0u8; 64], Config::DEFAULT);
    h.handle_accept(0);
    assert_eq!(h.handle_bytes(0, b"GE"), 2);
    assert!(!h.wants_transmit());
    assert_eq!(h.handle_bytes(0, b"\x00rest of it"), 11);
    assert_eq!(h.response_code(), Some(Code::BadRequest));
    assert!(h.wants_transmit());
}

#[test]
fn oversize_request_line_is_414_before_it_ends() {
    let mut h = Http::new([0u8; BUF], Config::DEFAULT);
    h.handle_accept(0);
    let mut line = b"GET /".to_vec();
    line.resize(BUF, b'a');
    h.handle_bytes(0, &line);
    assert!(!h.wants_transmit(), "a full buffer is not yet too long");
    h.handle_bytes(0, b"a");
    assert_eq!(h.response_code(), Some(Code::UriTooLong));
    // A request line of exactly the buffer's size (its CR included) is served.
    let mut exact = b"GET /".to_vec();
    exact.resize(BUF - b" HTTP/1.0\r".len(), b'a');
    exact.extend_from_slice(b" HTTP/1.0\r\n\n");
    assert_eq!(exact.iter().filter(|&&b| b != b'\n').count(), BUF);
    let p = parse(&serve_with(&[&exact], BUF, 4096, &status()).0);
    assert_eq!(p.code, 404);
    let mut long = b"GET /".to_vec();
    long.resize(64 * 1024, b'a');
    assert_eq!(
        parse(&serve_with(&[&long], BUF, 4096, &status()).0).code,
        414
    );
}

#[test]
fn oversize_headers_are_431_and_the_buffer_bounds_the_head() {
    // Request line and headers (without their line feeds) fill the buffer
    // exactly: served. One byte more is 431.
    let head = |pad: usize| {
        let mut r = b"GET / HTTP/1.1\r\nHost: d\r\nX: ".to_vec();
        let stored = r.len() - 2;
        r.resize(r.len() + BUF - 1 - stored + pad, b'y');
        r.extend_from_slice(b"\r\n\n");
        r
    };
    assert_eq!(head(0).iter().filter(|&&b| b != b'\n').count(), BUF);
    assert_eq!(
        parse(&serve_with(&[&head(0)], BUF, 4096, &status()).0).code,
        200
    );
    assert_eq!(
        parse(&serve_with(&[&head(1)], BUF, 4096, &status()).0).code,
        431
    );
    let mut endless = b"GET / HTTP/1.1\r\nHost: d\r\n".to_vec();
    for i in 0..10_000 {
        endless.extend_from_slice(format!("X-{i}: filler\r\n").as_bytes());
    }
    let (resp, close) = serve_with(&[&endless], BUF, 4096, &status());
    assert_eq!(parse(&resp).code, 431);
    assert_eq!(close, Some(Close::Graceful));
    let head = b"HEAD / HTTP/1.1\r\nX: ".to_vec();
    let mut head = head;
    head.resize(2 * BUF, b'x');
    let p = parse(&serve_with(&[&head], BUF, 4096, &status()).0);
    assert_eq!((p.code, p.body.len()), (431, 0), "HEAD: no body");
}

#[test]
fn slow_request_gets_408_at_the_deadline() {
    let cfg = Config {
        request_timeout_ms: 500,
        response_timeout_ms: 300,
    };
    let mut h = Http::new([0u8; BUF], cfg);
    assert_eq!(h.poll_timeout(), None, "idle");
    h.handle_accept(1000);
    assert_eq!(h.poll_timeout(), Some(1500));
    h.handle_bytes(1200, b"GET / HTTP/1.1\r\nHo");
    h.handle_timeout(1499);
    assert!(!h.wants_transmit());
    h.handle_timeout(1500);
    assert_eq!(h.response_code(), Some(Code::RequestTimeout));
    assert_eq!(h.poll_timeout(), Some(1800));
    // Bytes after the decision change nothing.
    h.handle_bytes(1501, b"st: d\r\n\r\n");
    assert_eq!(h.response_code(), Some(Code::RequestTimeout));
    let mut out = [0u8; 1024];
    let n = h.poll_transmit(&mut out, &status());
    let p = parse(&out[..n]);
    assert_eq!(p.code, 408);
    assert_eq!(h.poll_close(), Some(Close::Graceful));
    assert_eq!(h.poll_timeout(), None);
    // A HEAD that times out gets its 408 without a body.
    h.handle_accept(0);
    h.handle_bytes(0, b"HEAD / HTTP/1.1\r\nHo");
    h.handle_timeout(500);
    let n = h.poll_transmit(&mut out, &status());
    let p = parse(&out[..n]);
    assert_eq!(p.code, 408);
    assert!(p.body.is_empty() && p.header("Content-Length") != Some("0"));
}

#[test]
fn response_not_taken_in_time_is_reset() {
    let mut h = Http::new([0u8; BUF], Config::DEFAULT);
    h.handle_accept(0);
    h.handle_bytes(5, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(h.poll_timeout(), Some(10_005));
    let mut out = [0u8; 100];
    assert_eq!(h.poll_transmit(&mut out, &status()), 100);
    h.handle_timeout(10_004);
    assert_eq!(h.poll_close(), None);
    h.handle_timeout(10_005);
    assert_eq!(h.poll_close(), Some(Close::Reset));
    assert_eq!(h.poll_transmit(&mut out, &status()), 0);
    assert!(!h.wants_transmit());
}

#[test]
fn a_request_cut_short_by_the_peer_is_400_and_silence_just_closes() {
    let mut h = Http::new([0u8; BUF], Config::DEFAULT);
    let mut out = [0u8; 1024];
    for (sent, code) in [
        (&b"GET / HTTP/1.1\r\nHost: d\r\n"[..], Some(400)),
        (b"\r\n", None),
    ] {
        h.handle_accept(0);
        h.handle_bytes(0, sent);
        h.handle_eof(1);
        let n = h.poll_transmit(&mut out, &status());
        assert_eq!(n > 0, code.is_some());
        if let Some(code) = code {
            assert_eq!(parse(&out[..n]).code, code);
        }
        assert_eq!(h.poll_close(), Some(Close::Graceful));
        // After the response is decided, an end of input changes nothing.
        h.handle_eof(2);
        assert_eq!(h.poll_close(), Some(Close::Graceful));
    }
}

#[test]
fn no_deadlines_when_configured_off() {
    let cfg = Config {
        request_timeout_ms: 0,
        response_timeout_ms: 0,
    };
    let mut h = Http::new([0u8; BUF], cfg);
    h.handle_accept(0);
    assert_eq!(h.poll_timeout(), None);
    h.handle_timeout(u64::MAX);
    assert!(h.is_open() && !h.wants_transmit());
}

/// Requests covering every path through the parser and the renderer.
fn sample_requests() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = CASES.iter().map(|(r, _)| r.to_vec()).collect();
    v.push(b"HEAD /status.json HTTP/1.1\r\nHost: d\r\n\r\n".to_vec());
    let mut long = b"GET /".to_vec();
    long.resize(BUF + 10, b'a');
    v.push(long);
    let mut big = b"GET / HTTP/1.1\r\n".to_vec();
    big.resize(BUF + 10, b'h');
    v.push(big);
    v
}

#[test]
fn every_split_of_the_input_gives_the_same_response() {
    let s = status();
    for req in sample_requests() {
        let whole = serve_with(&[&req], BUF, 4096, &s);
        for i in 0..=req.len() {
            let (a, b) = req.split_at(i);
            assert_eq!(serve_with(&[a, b], BUF, 4096, &s), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = req.chunks(1).collect();
        assert_eq!(serve_with(&bytes, BUF, 4096, &s), whole, "byte by byte");
    }
}

#[test]
fn any_output_buffer_size_streams_the_same_response() {
    let s = status();
    for req in sample_requests() {
        let whole = serve_with(&[&req], BUF, 64 * 1024, &s);
        for out in [1, 2, 7, 64, 100, 1000] {
            assert_eq!(serve_with(&[&req], BUF, out, &s), whole, "out {out}");
        }
    }
}

#[test]
fn pipelined_requests_get_one_response_then_close() {
    let one = b"GET / HTTP/1.1\r\nHost: d\r\n\r\n";
    let mut many = Vec::new();
    for _ in 0..1000 {
        many.extend_from_slice(one);
    }
    let (resp, close) = serve_with(&[&many], BUF, 4096, &status());
    assert_eq!(resp, serve(one));
    assert_eq!(close, Some(Close::Graceful));
    assert_eq!(
        resp.windows(9).filter(|w| w == b"HTTP/1.1 ").count(),
        1,
        "exactly one response"
    );
    // Once done, input is discarded and nothing more is sent.
    let mut h = Http::new([0u8; BUF], Config::DEFAULT);
    h.handle_accept(0);
    h.handle_bytes(0, &many);
    let mut out = [0u8; 8192];
    assert!(h.poll_transmit(&mut out, &status()) > 0);
    assert_eq!(h.handle_bytes(0, one), one.len());
    assert_eq!(h.poll_transmit(&mut out, &status()), 0);
    assert_eq!(h.poll_close(), Some(Close::Graceful));
}

#[test]
fn strings_from_the_status_are_escaped() {
    let files = [FileInfo {
        name: "a<b>&\"c'\\d\u{1}.txt",
        size: 1,
    }];
    let agent = "<script>alert(\"x\")</script>&'é";
    let s = Status {
        agent,
        files: &files,
        ..status()
    };
    let (page, _) = serve_with(&[b"GET / HTTP/1.0\r\n\r\n"], BUF, 4096, &s);
    let t = parse(&page).text();
    assert!(!t.contains("<script"), "{t}");
    assert!(t.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;é"));
    assert!(
        t.contains("<th>a&lt;b&gt;&amp;&quot;c&#39;\\d\u{fffd}.txt</th>"),
        "{t}"
    );
    assert!(!t.contains('\u{1}'));
    let (js, _) = serve_with(&[b"GET /status.json HTTP/1.0\r\n\r\n"], BUF, 4096, &s);
    let text = parse(&js).text();
    assert!(!text.contains('<') && !text.contains('\u{1}'), "{text}");
    let j = json_parse(&text).expect("valid JSON");
    assert_eq!(j.get("agent"), Some(&J::Str(agent.into())));
    let J::Arr(list) = j.get("files").unwrap() else {
        panic!()
    };
    assert_eq!(list[0].get("name"), Some(&J::Str(files[0].name.into())));
}

#[test]
fn a_keyed_device_shows_no_file_names() {
    let secret = [FileInfo {
        name: "SECRET-plan.txt",
        size: 77,
    }];
    let s = Status {
        keyed: true,
        files: &secret,
        ..status()
    };
    for path in ["/", "/status.json"] {
        let req = format!("GET {path} HTTP/1.0\r\n\r\n");
        let (resp, _) = serve_with(&[req.as_bytes()], BUF, 4096, &s);
        let t = parse(&resp).text();
        assert!(!t.contains("SECRET"), "{t}");
        assert!(t.contains("1239"), "sizes are shown: {t}");
    }
    let (resp, _) = serve_with(&[b"GET / HTTP/1.0\r\n\r\n"], BUF, 4096, &s);
    let t = parse(&resp).text();
    assert!(t.contains("Names are not shown: the device is keyed."));
    assert!(t.contains("<tr><th>Files</th><td>2 of 32</td></tr>"));
    assert!(t.contains("required: connections authenticate"));
    let (resp, _) = serve_with(&[b"GET /status.json HTTP/1.0\r\n\r\n"], BUF, 4096, &s);
    let j = json_parse(&parse(&resp).text()).unwrap();
    assert_eq!(j.get("keyed"), Some(&J::Bool(true)));
    assert_eq!(j.get("files"), Some(&J::Null));
}

#[test]
fn figures_are_frozen_when_the_response_starts() {
    let first = status();
    let (whole, _) = serve_with(&[b"GET /status.json HTTP/1.0\r\n\r\n"], BUF, 4096, &first);
    let mut h = Http::new([0u8; BUF], Config::DEFAULT);
    h.handle_accept(0);
    h.handle_bytes(0, b"GET /status.json HTTP/1.0\r\n\r\n");
    let mut got = Vec::new();
    let mut out = [0u8; 50];
    let mut s = first;
    loop {
        let n = h.poll_transmit(&mut out, &s);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&out[..n]);
        // Time passes and counters move between calls.
        s.uptime_ms += 1234;
        s.unix_ms = s.unix_ms.map(|t| t + 1234);
        s.counters.bytes_out += 100_000;
        s.led = !s.led;
    }
    assert_eq!(got, whole);
    assert_eq!(h.poll_close(), Some(Close::Graceful));
}

#[test]
fn strings_changed_mid_response_reset_instead_of_tearing() {
    let mut h = Http::new([0u8; BUF], Config::DEFAULT);
    h.handle_accept(0);
    h.handle_bytes(0, b"GET / HTTP/1.0\r\n\r\n");
    let mut out = [0u8; 200];
    assert_eq!(h.poll_transmit(&mut out, &status()), 200);
    let other = [FileInfo {
        name: "new.bin",
        size: 1,
    }];
    let changed = Status {
        files: &other,
        ..status()
    };
    assert_eq!(h.poll_transmit(&mut out, &changed), 0);
    assert_eq!(h.poll_close(), Some(Close::Reset));
    assert!(!h.wants_transmit());
}

#[test]
fn idle_until_accepted_and_reusable_after_close() {
    let mut h = Http::new([0u8; BUF], Config::DEFAULT);
    let mut out = [0u8; 4096];
    assert!(!h.is_open());
    assert_eq!(h.handle_bytes(0, b"GET / HTTP/1.0\r\n\r\n"), 18);
    assert_eq!(h.poll_transmit(&mut out, &status()), 0);
    assert_eq!(h.poll_close(), None);
    for path in ["/nope", "/"] {
        h.handle_accept(0);
        assert!(h.is_open() && h.response_code().is_none());
        h.handle_bytes(0, format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
        let n = h.poll_transmit(&mut out, &status());
        let want = serve(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
        assert_eq!(out[..n], want[..]);
        h.handle_close();
        assert!(!h.is_open());
    }
}

#[test]
fn a_zero_sized_buffer_refuses_everything_with_a_status() {
    let (resp, _) = serve_with(&[b"GET / HTTP/1.0\r\n\r\n"], 0, 4096, &status());
    assert_eq!(parse(&resp).code, 414);
}

#[test]
fn dates_and_durations() {
    let d = |ms| format!("{}", HttpDate(ms));
    assert_eq!(d(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(d(951_782_400_000), "Tue, 29 Feb 2000 00:00:00 GMT");
    assert_eq!(d(T0 + 90_061_999), "Mon, 23 Nov 2026 01:01:01 GMT");
    assert_eq!(d(4_102_444_799_000), "Thu, 31 Dec 2099 23:59:59 GMT");
    assert_eq!(format!("{}", Iso(951_782_400_000)), "2000-02-29T00:00:00Z");
    assert_eq!(format!("{}", Uptime(59_999)), "00:00:59");
    assert_eq!(format!("{}", Uptime(90_061_000)), "1d 01:01:01");
    // Far-future clocks do not overflow.
    let _ = format!("{}{}", HttpDate(u64::MAX), Iso(u64::MAX));
}

// A small strict JSON parser, to check the responder's JSON.

#[derive(Debug, Clone, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn get(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

fn json_parse(text: &str) -> Result<J, usize> {
    let b = text.as_bytes();
    let mut i = 0;
    let v = value(b, &mut i)?;
    skip_ws(b, &mut i);
    if i == b.len() {
        Ok(v)
    } else {
        Err(i)
    }
}

fn skip_ws(b: &[u8], i: &mut usize) {
    while *i < b.len() && b" \t\r\n".contains(&b[*i]) {
        *i += 1;
    }
}

fn eat(b: &[u8], i: &mut usize, what: &[u8]) -> Result<(), usize> {
    if b[*i..].starts_with(what) {
        *i += what.len();
        Ok(())
    } else {
        Err(*i)
    }
}

fn value(b: &[u8], i: &mut usize) -> Result<J, usize> {
    skip_ws(b, i);
    match b.get(*i).ok_or(*i)? {
        b'n' => eat(b, i, b"null").map(|_| J::Null),
        b't' => eat(b, i, b"true").map(|_| J::Bool(true)),
        b'f' => eat(b, i, b"false").map(|_| J::Bool(false)),
        b'"' => string(b, i).map(J::Str),
        b'[' => array(b, i),
        b'{' => object(b, i),
        _ => number(b, i),
    }
}

fn number(b: &[u8], i: &mut usize) -> Result<J, usize> {
    let start = *i;
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - s
    };
    if b.get(*i) == Some(&b'-') {
        *i += 1;
    }
    let n = digits(i);
    if n == 0 || (n > 1 && b[*i - n] == b'0') {
        return Err(start);
    }
    if b.get(*i) == Some(&b'.') {
        *i += 1;
        if digits(i) == 0 {
            return Err(*i);
        }
    }
    if matches!(b.get(*i), Some(b'e' | b'E')) {
        *i += 1;
        if matches!(b.get(*i), Some(b'+' | b'-')) {
            *i += 1;
        }
        if digits(i) == 0 {
            return Err(*i);
        }
    }
    Ok(J::Num(String::from_utf8(b[start..*i].to_vec()).unwrap()))
}

fn string(b: &[u8], i: &mut usize) -> Result<String, usize> {
    *i += 1;
    let mut s = String::new();
    loop {
        let c = *b.get(*i).ok_or(*i)?;
        *i += 1;
        match c {
            b'"' => return Ok(s),
            0..=0x1f => return Err(*i - 1),
            b'\\' => {
                let e = *b.get(*i).ok_or(*i)?;
                *i += 1;
                s.push(match e {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => {
                        let hex = b.get(*i..*i + 4).ok_or(*i)?;
                        let hex = core::str::from_utf8(hex).map_err(|_| *i)?;
                        let cp = u32::from_str_radix(hex, 16).map_err(|_| *i)?;
                        *i += 4;
                        char::from_u32(cp).ok_or(*i)?
                    }
                    _ => return Err(*i - 1),
                });
            }
            _ => {
                // Copy one whole UTF-8 character.
                let start = *i - 1;
                let len = match c {
                    0xf0.. => 4,
                    0xe0.. => 3,
                    0xc0.. => 2,
                    _ => 1,
                };
                let ch = b.get(start..start + len).ok_or(start)?;
                s.push_str(core::str::from_utf8(ch).map_err(|_| start)?);
                *i = start + len;
            }
        }
    }
}

fn array(b: &[u8], i: &mut usize) -> Result<J, usize> {
    *i += 1;
    let mut v = Vec::new();
    skip_ws(b, i);
    if b.get(*i) == Some(&b']') {
        *i += 1;
        return Ok(J::Arr(v));
    }
    loop {
        v.push(value(b, i)?);
        skip_ws(b, i);
        match b.get(*i) {
            Some(b',') => *i += 1,
            Some(b']') => {
                *i += 1;
                return Ok(J::Arr(v));
            }
            _ => return Err(*i),
        }
    }
}

fn object(b: &[u8], i: &mut usize) -> Result<J, usize> {
    *i += 1;
    let mut m: Vec<(String, J)> = Vec::new();
    skip_ws(b, i);
    if b.get(*i) == Some(&b'}') {
        *i += 1;
        return Ok(J::Obj(m));
    }
    loop {
        skip_ws(b, i);
        if b.get(*i) != Some(&b'"') {
            return Err(*i);
        }
        let k = string(b, i)?;
        if m.iter().any(|(x, _)| *x == k) {
            return Err(*i);
        }
        skip_ws(b, i);
        eat(b, i, b":")?;
        m.push((k, value(b, i)?));
        skip_ws(b, i);
        match b.get(*i) {
            Some(b',') => *i += 1,
            Some(b'}') => {
                *i += 1;
                return Ok(J::Obj(m));
            }
            _ => return Err(*i),
        }
    }
}

#[test]
fn the_json_checker_rejects_what_it_should() {
    for bad in [
        "",
        "{",
        "{\"a\":1,}",
        "[1,]",
        "{\"a\" 1}",
        "01",
        "1.",
        "\"\u{1}\"",
        "\"\\x\"",
        "{\"a\":1,\"a\":2}",
        "nul",
        "[1] 2",
        "{a:1}",
    ] {
        assert!(json_parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        json_parse(" {\"a\":[true,false,null,-1.5e3,\"\\u00e9\\n\"]} ").unwrap(),
        J::Obj(vec![(
            "a".into(),
            J::Arr(vec![
                J::Bool(true),
                J::Bool(false),
                J::Null,
                J::Num("-1.5e3".into()),
                J::Str("é\n".into())
            ])
        )])
    );
}

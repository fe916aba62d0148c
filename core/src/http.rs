//! A read-only HTTP/1.1 status page: `no_std`, heap-free, sans-IO.
//!
//! An [`Http`] responder serves one connection at a time. It knows nothing
//! about the device: the caller fills a [`Status`] (agent, uptime, clock,
//! address, store use, counters, LED) and passes it to
//! [`Http::poll_transmit`]. It changes nothing, serves no file contents, and
//! shows file names only when [`Status::keyed`] is false.
//!
//! # Call order
//! ```text
//! new:      http = Http::new(request_buf, Config::DEFAULT)
//! accept:   http.handle_accept(now_ms)
//! loop:     http.handle_bytes(now_ms, received)             // always consumes all of it
//!           n = http.poll_transmit(send_space, &status)     // send those n bytes
//!           http.handle_timeout(now_ms)                     // wake at poll_timeout()
//!           on the peer's FIN: http.handle_eof(now_ms)
//!           match http.poll_close() { Some(Close::Graceful) => close once sent,
//!                                     Some(Close::Reset) => reset now, None => {} }
//! closed:   http.handle_close()
//! ```
//!
//! # What it answers
//! * `GET /` an HTML page (phone-sized, no script, no external resource),
//!   `GET /status.json` the same as JSON; `HEAD` for both (the same
//!   headers, no body).
//! * 400 for a malformed request (request line, header line, bare CR,
//!   control bytes, a missing `Host` in HTTP/1.1 or two of them), 404 for
//!   another path, 405 (`Allow: GET, HEAD`) for another method, 408 when
//!   the request is not complete within [`Config::request_timeout_ms`] of the
//!   accept (slowloris), 414 when the request line does not fit the request
//!   buffer, 431 when the request line and headers together do not, 505 for
//!   an HTTP version other than 1.x.
//! * One request per connection: every response says `Connection: close`
//!   and has a `Content-Length`; after it the connection closes, and bytes
//!   after the first request's head (a body, pipelined requests) are
//!   read and discarded. The request head is bounded by the caller's
//!   buffer; the response is rendered again from the status on each
//!   `poll_transmit` call, straight into the caller's buffer, so it may be
//!   larger than that buffer and nothing else is held.
//! * The figures of a [`Status`] are copied when its response starts, so a
//!   response streamed over several calls is consistent. If the strings
//!   (agent, file names) change mid-response the responder stops and asks
//!   for a reset rather than send a torn body ([`Close::Reset`]).

use core::fmt::{self, Write as _};

/// Deadlines of one connection, in milliseconds (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The request head must be complete this long after the accept (408).
    pub request_timeout_ms: u32,
    /// The response must be taken (sent) this long after it was decided;
    /// otherwise the connection is reset.
    pub response_timeout_ms: u32,
}

impl Config {
    /// 10 s for the request, 10 s for the response.
    pub const DEFAULT: Config = Config {
        request_timeout_ms: 10_000,
        response_timeout_ms: 10_000,
    };
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

/// A stored file, as listed on an unkeyed device's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo<'a> {
    /// The file's name.
    pub name: &'a str,
    /// Size in bytes.
    pub size: u64,
}

/// How full the store is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreUse {
    /// Bytes used (committed files and uploads in progress).
    pub used: u64,
    /// Bytes the store holds.
    pub capacity: u64,
    /// Committed files.
    pub files: u32,
    /// Uploads in progress.
    pub pending: u32,
    /// Most files the store can track.
    pub max_files: u32,
}

/// Connection counters since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Protocol (TCP) connections accepted.
    pub connections: u64,
    /// Protocol connections open now.
    pub open: u32,
    /// Datagrams received.
    pub datagrams: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Error frames sent.
    pub errors_sent: u64,
    /// HTTP requests answered (any status).
    pub http_requests: u64,
}

/// Security counters since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Security {
    /// Wrong authentication proofs.
    pub auth_failures: u64,
    /// Connections refused while their peer was backing off.
    pub backoff_refusals: u64,
    /// Frames whose tag failed, or unsealed after authentication.
    pub integrity_failures: u64,
    /// Frames that failed to decode or parse.
    pub bad_frames: u64,
    /// Connections closed by a deadline.
    pub timeouts: u64,
}

/// What the page shows; the caller fills it for every
/// [`poll_transmit`](Http::poll_transmit) call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status<'a> {
    /// Software name and version (shown escaped).
    pub agent: &'a str,
    /// Milliseconds since boot.
    pub uptime_ms: u64,
    /// Unix milliseconds, if the device knows the date.
    pub unix_ms: Option<u64>,
    /// The device's IPv4 address, if it has one.
    pub ip: Option<[u8; 4]>,
    /// The user LED.
    pub led: bool,
    /// Whether the device requires the pre-shared key. When set, file
    /// names are never shown, only counts and sizes.
    pub keyed: bool,
    /// Store use.
    pub store: StoreUse,
    /// Connection counters.
    pub counters: Counters,
    /// Security counters.
    pub security: Security,
    /// The stored files; listed only when `keyed` is false.
    pub files: &'a [FileInfo<'a>],
}

impl Status<'_> {
    /// An empty status for `agent`.
    pub const fn new(agent: &str) -> Status<'_> {
        Status {
            agent,
            uptime_ms: 0,
            unix_ms: None,
            ip: None,
            led: false,
            keyed: false,
            store: StoreUse {
                used: 0,
                capacity: 0,
                files: 0,
                pending: 0,
                max_files: 0,
            },
            counters: Counters {
                connections: 0,
                open: 0,
                datagrams: 0,
                frames_in: 0,
                frames_out: 0,
                bytes_in: 0,
                bytes_out: 0,
                errors_sent: 0,
                http_requests: 0,
            },
            security: Security {
                auth_failures: 0,
                backoff_refusals: 0,
                integrity_failures: 0,
                bad_frames: 0,
                timeouts: 0,
            },
            files: &[],
        }
    }
}

/// The status codes the responder sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Code {
    /// 200: the page or the JSON.
    Ok,
    /// 400: a malformed request.
    BadRequest,
    /// 404: a path other than `/` and `/status.json`.
    NotFound,
    /// 405: a method other than GET and HEAD.
    MethodNotAllowed,
    /// 408: the request did not complete in time.
    RequestTimeout,
    /// 414: the request line does not fit the request buffer.
    UriTooLong,
    /// 431: the request head does not fit the request buffer.
    HeaderFieldsTooLarge,
    /// 505: an HTTP version other than 1.x.
    VersionNotSupported,
}

impl Code {
    /// The three-digit number.
    pub fn number(self) -> u16 {
        match self {
            Code::Ok => 200,
            Code::BadRequest => 400,
            Code::NotFound => 404,
            Code::MethodNotAllowed => 405,
            Code::RequestTimeout => 408,
            Code::UriTooLong => 414,
            Code::HeaderFieldsTooLarge => 431,
            Code::VersionNotSupported => 505,
        }
    }

    /// The reason phrase.
    pub fn reason(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::BadRequest => "Bad Request",
            Code::NotFound => "Not Found",
            Code::MethodNotAllowed => "Method Not Allowed",
            Code::RequestTimeout => "Request Timeout",
            Code::UriTooLong => "URI Too Long",
            Code::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Code::VersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

/// How [`Http::poll_close`] wants the connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Close {
    /// The whole response was handed out: close after it is sent.
    Graceful,
    /// The response cannot be completed (not taken in time, or the status
    /// strings changed mid-response): reset the connection now.
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Page,
    Json,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RequestLine {
    method: Method,
    target: Target,
    minor: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Page,
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Response {
    code: Code,
    body: Body,
    head_only: bool,
}

impl Response {
    fn error(code: Code, head_only: bool) -> Response {
        Response {
            code,
            body: Body::Text,
            head_only,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No connection.
    Idle,
    /// Collecting the request head.
    Reading,
    /// Handing out the response.
    Responding,
    /// The response was handed out whole.
    Done,
    /// The response was abandoned.
    Reset,
}

/// The response in progress: the figures it shows and what was sent.
#[derive(Debug, Clone, Copy)]
struct Out {
    figures: Status<'static>,
    body_len: usize,
    total: usize,
    digest: u64,
    sent: usize,
}

/// The responder for one connection at a time; `B` is the caller's request
/// buffer, which bounds the request line plus headers.
#[derive(Debug)]
pub struct Http<B> {
    buf: B,
    config: Config,
    state: State,
    len: usize,
    line_start: usize,
    request: Option<RequestLine>,
    hosts: u8,
    deadline: Option<u64>,
    response: Option<Response>,
    out: Option<Out>,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Http<B> {
    /// A responder using `buf` for request heads; idle until
    /// [`handle_accept`](Self::handle_accept).
    pub fn new(buf: B, config: Config) -> Self {
        Http {
            buf,
            config,
            state: State::Idle,
            len: 0,
            line_start: 0,
            request: None,
            hosts: 0,
            deadline: None,
            response: None,
            out: None,
        }
    }

    /// A connection was accepted at `now_ms`: expect a request.
    pub fn handle_accept(&mut self, now_ms: u64) {
        self.handle_close();
        self.state = State::Reading;
        self.deadline = after(now_ms, self.config.request_timeout_ms);
    }

    /// The connection ended (either side): forget it.
    pub fn handle_close(&mut self) {
        self.state = State::Idle;
        self.len = 0;
        self.line_start = 0;
        self.request = None;
        self.hosts = 0;
        self.deadline = None;
        self.response = None;
        self.out = None;
    }

    /// Whether a connection is being served (accepted, not yet closed).
    pub fn is_open(&self) -> bool {
        self.state != State::Idle
    }

    /// The status code of the response decided for this connection, if any.
    pub fn response_code(&self) -> Option<Code> {
        self.response.map(|r| r.code)
    }

    /// Feed received bytes at `now_ms`. Every byte is consumed: the request
    /// head is kept in the request buffer, anything after it (and anything
    /// once a response is decided) is discarded. Never panics.
    pub fn handle_bytes(&mut self, now_ms: u64, input: &[u8]) -> usize {
        for &b in input {
            if self.state != State::Reading {
                break;
            }
            match self.push(b) {
                Ok(false) => {}
                Ok(true) => self.respond(self.decide(), now_ms),
                Err(code) => self.respond(Response::error(code, self.is_head()), now_ms),
            }
        }
        input.len()
    }

    /// The peer will send no more (it shut its side down) at `now_ms`. A
    /// request cut short is answered 400; with nothing received at all the
    /// connection just closes ([`Close::Graceful`], no response).
    pub fn handle_eof(&mut self, now_ms: u64) {
        if self.state != State::Reading {
            return;
        }
        if self.request.is_none() && self.len == 0 {
            self.state = State::Done;
        } else {
            self.respond(Response::error(Code::BadRequest, self.is_head()), now_ms);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            State::Reading | State::Responding => self.deadline,
            _ => None,
        }
    }

    /// Act on deadlines at `now_ms`: a request not complete in time gets
    /// 408; a response not taken in time is abandoned ([`Close::Reset`]).
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let Some(due) = self.poll_timeout() else {
            return;
        };
        if now_ms < due {
            return;
        }
        match self.state {
            State::Reading => {
                let r = Response::error(Code::RequestTimeout, self.is_head());
                self.respond(r, now_ms);
            }
            _ => self.state = State::Reset,
        }
    }

    /// Whether a response is waiting for [`poll_transmit`](Self::poll_transmit).
    pub fn wants_transmit(&self) -> bool {
        self.state == State::Responding
    }

    /// Whether, and how, the connection should be closed now.
    pub fn poll_close(&self) -> Option<Close> {
        match self.state {
            State::Done => Some(Close::Graceful),
            State::Reset => Some(Close::Reset),
            _ => None,
        }
    }

    /// Write the next bytes of the response into `out`; returns how many.
    /// The figures of `status` are copied at the response's first call; its
    /// strings must stay the same until the response is done.
    pub fn poll_transmit(&mut self, out: &mut [u8], status: &Status<'_>) -> usize {
        let (State::Responding, Some(resp)) = (self.state, self.response) else {
            return 0;
        };
        let o = *self.out.get_or_insert_with(|| start(resp, status));
        let view = Status {
            agent: status.agent,
            files: status.files,
            ..o.figures
        };
        let mut sink = Sink::new(out, o.sent);
        let _ = render(resp, &view, o.body_len, &mut sink);
        if sink.pos != o.total || sink.hash != o.digest {
            self.state = State::Reset;
            return 0;
        }
        let n = sink.n;
        let sent = o.sent + n;
        if let Some(o) = self.out.as_mut() {
            o.sent = sent;
        }
        if sent >= o.total {
            self.state = State::Done;
        }
        n
    }

    /// Whether the request line (if in) asked for HEAD: no body then.
    fn is_head(&self) -> bool {
        self.request.is_some_and(|r| r.method == Method::Head)
    }

    fn respond(&mut self, r: Response, now_ms: u64) {
        self.response = Some(r);
        self.out = None;
        self.state = State::Responding;
        self.deadline = after(now_ms, self.config.response_timeout_ms);
    }

    /// Take one byte of the request head; `Ok(true)` when the head is complete.
    fn push(&mut self, b: u8) -> Result<bool, Code> {
        if b == b'\n' {
            return self.end_line();
        }
        if self.request.is_none() && (b >= 0x80 || b == 0x7f || (b < 0x20 && b != b'\r')) {
            // A request line is ASCII without control bytes: refuse garbage at once.
            return Err(Code::BadRequest);
        }
        let buf = self.buf.as_mut();
        let Some(slot) = buf.get_mut(self.len) else {
            return Err(match self.request {
                None => Code::UriTooLong,
                Some(_) => Code::HeaderFieldsTooLarge,
            });
        };
        *slot = b;
        self.len += 1;
        Ok(false)
    }

    /// A line feed arrived: check the line it ends; `Ok(true)` if it was
    /// the empty line that ends the head.
    fn end_line(&mut self) -> Result<bool, Code> {
        let line = &self.buf.as_ref()[self.line_start..self.len];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self.request {
            // Empty lines before the request line are ignored (RFC 9112 2.2).
            None if line.is_empty() => self.len = 0,
            None => self.request = Some(parse_request_line(line)?),
            Some(_) if line.is_empty() => return Ok(true),
            Some(_) => self.hosts = self.hosts.saturating_add(parse_header(line)?),
        }
        self.line_start = self.len;
        Ok(false)
    }

    /// The response to the complete head.
    fn decide(&self) -> Response {
        let Some(req) = self.request else {
            return Response::error(Code::BadRequest, false);
        };
        let head_only = self.is_head();
        let (code, body) = if self.hosts > 1 || (req.minor >= 1 && self.hosts == 0) {
            (Code::BadRequest, Body::Text)
        } else if req.method == Method::Other {
            (Code::MethodNotAllowed, Body::Text)
        } else {
            match req.target {
                Target::Page => (Code::Ok, Body::Page),
                Target::Json => (Code::Ok, Body::Json),
                Target::Other => (Code::NotFound, Body::Text),
            }
        };
        Response {
            code,
            body,
            head_only,
        }
    }
}

fn after(now_ms: u64, ms: u32) -> Option<u64> {
    (ms > 0).then(|| now_ms.saturating_add(u64::from(ms)))
}

/// Freeze the figures of `status` and measure the response.
fn start(resp: Response, status: &Status<'_>) -> Out {
    let figures = Status {
        agent: "",
        files: &[],
        ..*status
    };
    let mut body = Sink::new(&mut [], 0);
    let _ = render_body(resp, status, &mut body);
    let mut all = Sink::new(&mut [], 0);
    let _ = render(resp, status, body.pos, &mut all);
    Out {
        figures,
        body_len: body.pos,
        total: all.pos,
        digest: all.hash,
        sent: 0,
    }
}

/// `tchar` of RFC 9110: what a method or a header name is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_request_line(line: &[u8]) -> Result<RequestLine, Code> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Code::BadRequest);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Code::BadRequest);
    }
    let minor = match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            if *major != b'1' {
                return Err(Code::VersionNotSupported);
            }
            minor - b'0'
        }
        _ => return Err(Code::BadRequest),
    };
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        _ => Method::Other,
    };
    let target = match path_of(target).ok_or(Code::BadRequest)? {
        b"/" => Target::Page,
        b"/status.json" => Target::Json,
        _ => Target::Other,
    };
    Ok(RequestLine {
        method,
        target,
        minor,
    })
}

/// The path of a request target (origin-form, absolute-form or `*`),
/// without its query; `None` if the target is malformed.
fn path_of(target: &[u8]) -> Option<&[u8]> {
    if target.is_empty() || !target.iter().all(|b| (0x21..0x7f).contains(b)) {
        return None;
    }
    let scheme = |s: &[u8]| target.len() >= s.len() && target[..s.len()].eq_ignore_ascii_case(s);
    let path = if scheme(b"http://") || scheme(b"https://") {
        let rest = &target[target.iter().position(|&b| b == b':')? + 3..];
        match rest.iter().position(|&b| b == b'/' || b == b'?') {
            Some(i) if rest[i] == b'/' => &rest[i..],
            _ => b"/",
        }
    } else if target == b"*" || target[0] == b'/' {
        target
    } else {
        return None;
    };
    let end = path.iter().position(|&b| b == b'?').unwrap_or(path.len());
    Some(&path[..end])
}

/// Check one header line; returns 1 if it is a `Host` field.
fn parse_header(line: &[u8]) -> Result<u8, Code> {
    let colon = line.iter().position(|&b| b == b':');
    let Some(colon) = colon else {
        return Err(Code::BadRequest);
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    // Also refuses obs-fold and whitespace before the colon (RFC 9112 5.1).
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(Code::BadRequest);
    }
    if !value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80)
    {
        return Err(Code::BadRequest);
    }
    if !name.eq_ignore_ascii_case(b"host") {
        return Ok(0);
    }
    let host = value.trim_ascii();
    let ok = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(b);
    if host.iter().all(ok) {
        Ok(1)
    } else {
        Err(Code::BadRequest)
    }
}

/// A `fmt::Write` that sees the whole response and keeps the bytes from
/// `skip` on that fit `out`; it counts and hashes everything.
struct Sink<'o> {
    out: &'o mut [u8],
    skip: usize,
    pos: usize,
    n: usize,
    hash: u64,
}

impl<'o> Sink<'o> {
    fn new(out: &'o mut [u8], skip: usize) -> Self {
        Sink {
            out,
            skip,
            pos: 0,
            n: 0,
            // FNV-1a 64.
            hash: 0xcbf2_9ce4_8422_2325,
        }
    }
}

impl fmt::Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let b = s.as_bytes();
        for &x in b {
            self.hash = (self.hash ^ u64::from(x)).wrapping_mul(0x100_0000_01b3);
        }
        let (start, end) = (self.pos, self.pos + b.len());
        let lo = start.max(self.skip);
        let hi = end.min(self.skip + self.out.len());
        if lo < hi {
            self.out[lo - self.skip..hi - self.skip].copy_from_slice(&b[lo - start..hi - start]);
            self.n = hi - self.skip;
        }
        self.pos = end;
        Ok(())
    }
}

/// The whole response: status line, headers and (unless HEAD) the body.
fn render(r: Response, s: &Status<'_>, body_len: usize, w: &mut Sink<'_>) -> fmt::Result {
    let (code, reason) = (r.code.number(), r.code.reason());
    write!(w, "HTTP/1.1 {code} {reason}\r\n")?;
    if let Some(ms) = s.unix_ms {
        write!(w, "Date: {}\r\n", HttpDate(ms))?;
    }
    let ctype = match r.body {
        Body::Page => "text/html; charset=utf-8",
        Body::Json => "application/json",
        Body::Text => "text/plain; charset=utf-8",
    };
    write!(w, "Content-Type: {ctype}\r\nContent-Length: {body_len}\r\n")?;
    if r.code == Code::MethodNotAllowed {
        w.write_str("Allow: GET, HEAD\r\n")?;
    }
    w.write_str(
        "Cache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n\
         Connection: close\r\n\r\n",
    )?;
    if r.head_only {
        return Ok(());
    }
    render_body(r, s, w)
}

fn render_body(r: Response, s: &Status<'_>, w: &mut Sink<'_>) -> fmt::Result {
    match r.body {
        Body::Page => page(s, w),
        Body::Json => json(s, w),
        Body::Text => writeln!(w, "{} {}", r.code.number(), r.code.reason()),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1em auto;max-width:40em;\
padding:0 .5em;line-height:1.4}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.25em .4em;border-bottom:1px solid #ddd;vertical-align:top}\
th{font-weight:normal;color:#555;width:45%}h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.2em}";

fn row(w: &mut Sink<'_>, name: impl fmt::Display, value: impl fmt::Display) -> fmt::Result {
    writeln!(w, "<tr><th>{name}</th><td>{value}</td></tr>")
}

fn page(s: &Status<'_>, w: &mut Sink<'_>) -> fmt::Result {
    let agent = Html(s.agent);
    write!(
        w,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{agent} status</title>\n<style>{STYLE}</style></head>\n<body>\n\
         <h1>{agent}</h1>\n<table>\n"
    )?;
    row(w, "Uptime", Uptime(s.uptime_ms))?;
    match s.unix_ms {
        Some(ms) => row(w, "Wall time", Iso(ms))?,
        None => row(w, "Wall time", "unknown")?,
    }
    match s.ip {
        Some(ip) => row(w, "IP address", Ip(ip))?,
        None => row(w, "IP address", "none")?,
    }
    row(w, "LED", if s.led { "on" } else { "off" })?;
    let key = if s.keyed {
        "required: connections authenticate, frames are sealed"
    } else {
        "none: anyone who reaches the device is served"
    };
    row(w, "Key", key)?;
    page_figures(s, w)?;
    page_files(s, w)?;
    w.write_str("</body></html>\n")
}

fn page_figures(s: &Status<'_>, w: &mut Sink<'_>) -> fmt::Result {
    let (st, c, x) = (&s.store, &s.counters, &s.security);
    let pct = (st.used.saturating_mul(100))
        .checked_div(st.capacity)
        .unwrap_or(0);
    w.write_str("</table>\n<h2>Store</h2>\n<table>\n")?;
    let used = (st.used, st.capacity, pct);
    row(
        w,
        "Used",
        format_args!("{} of {} bytes ({}%)", used.0, used.1, used.2),
    )?;
    row(w, "Files", format_args!("{} of {}", st.files, st.max_files))?;
    row(w, "Uploads in progress", st.pending)?;
    w.write_str("</table>\n<h2>Connections</h2>\n<table>\n")?;
    row(w, "Open now", c.open)?;
    row(w, "Accepted since boot", c.connections)?;
    row(w, "Datagrams", c.datagrams)?;
    row(
        w,
        "Frames in / out",
        format_args!("{} / {}", c.frames_in, c.frames_out),
    )?;
    row(
        w,
        "Bytes in / out",
        format_args!("{} / {}", c.bytes_in, c.bytes_out),
    )?;
    row(w, "Errors sent", c.errors_sent)?;
    row(w, "Status page requests", c.http_requests)?;
    w.write_str("</table>\n<h2>Security</h2>\n<table>\n")?;
    row(w, "Failed authentications", x.auth_failures)?;
    row(w, "Back-off refusals", x.backoff_refusals)?;
    row(w, "Integrity failures", x.integrity_failures)?;
    row(w, "Bad frames", x.bad_frames)?;
    row(w, "Deadlines passed", x.timeouts)?;
    w.write_str("</table>\n")
}

fn page_files(s: &Status<'_>, w: &mut Sink<'_>) -> fmt::Result {
    w.write_str("<h2>Files</h2>\n")?;
    if s.keyed {
        return w.write_str("<p>Names are not shown: the device is keyed.</p>\n");
    }
    if s.files.is_empty() {
        return w.write_str("<p>No files.</p>\n");
    }
    w.write_str("<table>\n")?;
    for f in s.files {
        row(w, Html(f.name), format_args!("{} bytes", f.size))?;
    }
    w.write_str("</table>\n")
}

fn json(s: &Status<'_>, w: &mut Sink<'_>) -> fmt::Result {
    write!(
        w,
        "{{\"agent\":\"{}\",\"uptime_ms\":{},",
        Json(s.agent),
        s.uptime_ms
    )?;
    match s.unix_ms {
        Some(ms) => write!(w, "\"unix_ms\":{ms},\"wall_time\":\"{}\",", Iso(ms))?,
        None => w.write_str("\"unix_ms\":null,\"wall_time\":null,")?,
    }
    match s.ip {
        Some(ip) => write!(w, "\"ip\":\"{}\",", Ip(ip))?,
        None => w.write_str("\"ip\":null,")?,
    }
    let (st, c, x) = (&s.store, &s.counters, &s.security);
    write!(
        w,
        "\"led\":{},\"keyed\":{},\"store\":{{\"used\":{},\"capacity\":{},\"files\":{},\
         \"pending\":{},\"max_files\":{}}},",
        s.led, s.keyed, st.used, st.capacity, st.files, st.pending, st.max_files
    )?;
    write!(
        w,
        "\"connections\":{{\"open\":{},\"accepted\":{},\"datagrams\":{},\"frames_in\":{},\
         \"frames_out\":{},\"bytes_in\":{},\"bytes_out\":{},\"errors_sent\":{},\
         \"http_requests\":{}}},",
        c.open,
        c.connections,
        c.datagrams,
        c.frames_in,
        c.frames_out,
        c.bytes_in,
        c.bytes_out,
        c.errors_sent,
        c.http_requests
    )?;
    write!(
        w,
        "\"security\":{{\"auth_failures\":{},\"backoff_refusals\":{},\
         \"integrity_failures\":{},\"bad_frames\":{},\"timeouts\":{}}},",
        x.auth_failures, x.backoff_refusals, x.integrity_failures, x.bad_frames, x.timeouts
    )?;
    json_files(s, w)?;
    w.write_str("}\n")
}

fn json_files(s: &Status<'_>, w: &mut Sink<'_>) -> fmt::Result {
    if s.keyed {
        return w.write_str("\"files\":null");
    }
    w.write_str("\"files\":[")?;
    for (i, f) in s.files.iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        write!(
            w,
            "{comma}{{\"name\":\"{}\",\"size\":{}}}",
            Json(f.name),
            f.size
        )?;
    }
    w.write_str("]")
}

/// Text escaped for HTML element content and attribute values; control
/// characters (which HTML does not allow) become U+FFFD.
struct Html<'a>(&'a str);

impl fmt::Display for Html<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let special = |c: char| matches!(c, '&' | '<' | '>' | '"' | '\'') || c.is_ascii_control();
        let mut rest = self.0;
        while let Some(i) = rest.find(special) {
            // `get`, not indexing: `i` and `i + 1` are boundaries (an ASCII
            // byte), and no str-slicing panic (with its char formatting
            // and Unicode tables, 3 KiB of flash) is linked.
            let (head, tail) = (rest.get(..i).unwrap_or(""), rest.get(i + 1..).unwrap_or(""));
            f.write_str(head)?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                b'\'' => "&#39;",
                _ => "\u{fffd}",
            })?;
            rest = tail;
        }
        f.write_str(rest)
    }
}

/// Text escaped for a JSON string (and safe inside HTML: `<>&` escaped too).
struct Json<'a>(&'a str);

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let special = |c: char| matches!(c, '"' | '\\' | '<' | '>' | '&' | '\u{0}'..='\u{1f}');
        let mut rest = self.0;
        while let Some(i) = rest.find(special) {
            let (head, tail) = (rest.get(..i).unwrap_or(""), rest.get(i + 1..).unwrap_or(""));
            f.write_str(head)?;
            match rest.as_bytes()[i] {
                b'"' => f.write_str("\\\"")?,
                b'\\' => f.write_str("\\\\")?,
                b'\n' => f.write_str("\\n")?,
                b => write!(f, "\\u{:04x}", b)?,
            }
            rest = tail;
        }
        f.write_str(rest)
    }
}

struct Ip([u8; 4]);

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

/// `[Nd ]HH:MM:SS`.
struct Uptime(u64);

impl fmt::Display for Uptime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0 / 1000;
        let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
        if d > 0 {
            write!(f, "{d}d ")?;
        }
        write!(f, "{h:02}:{m:02}:{s:02}")
    }
}

/// Date and time (UTC) `ms` after the Unix epoch, with the day of the week
/// (0: Sunday). Howard Hinnant's days-to-civil algorithm.
fn civil(ms: u64) -> (u64, u8, u8, u8, u8, u8, u8) {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + u64::from(month <= 2);
    let wday = ((days + 4) % 7) as u8;
    let (h, m, s) = ((rem / 3600) as u8, (rem / 60 % 60) as u8, (rem % 60) as u8);
    (year, month, day, h, m, s, wday)
}

/// ISO 8601, `2026-11-22T00:00:00Z`.
struct Iso(u64);

impl fmt::Display for Iso {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, m, s, _) = civil(self.0);
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
    }
}

/// The IMF-fixdate of RFC 9110, `Sun, 22 Nov 2026 00:00:00 GMT`.
struct HttpDate(u64);

impl fmt::Display for HttpDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let (y, mo, d, h, m, s, wd) = civil(self.0);
        let (wd, mo) = (DAYS[usize::from(wd)], MONTHS[usize::from(mo - 1)]);
        write!(f, "{wd}, {d:02} {mo} {y:04} {h:02}:{m:02}:{s:02} GMT")
    }
}

#[cfg(test)]
mod test;

//! The status page of the simulated device (`tether-sim --http`): a few TCP
//! listeners on port 80, each feeding the core's sans-IO
//! [`tether_proto::http::Http`] responder, with a [`Status`] filled from the
//! device's counters, configuration, store and LED.
//!
//! It only reads the device: it holds `&SimDev`, never `&mut`. The hook in
//! `lib.rs` is [`HttpServer::new`] at start, [`HttpServer::serve`] on every
//! poll and [`HttpServer::poll_timeout`] for the next wake-up.

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use smoltcp::wire::Ipv4Address;
use tether_proto::device::CLOSE_GRACE_MS;
use tether_proto::http::{Close, Config, FileInfo, Http, Status};

use crate::SimDev;

/// The port the page is served on.
pub const PORT: u16 = 80;
/// HTTP connections served at once.
pub const CONNECTIONS: usize = 2;
/// Request buffer per connection: the request line and headers together.
pub const REQUEST_BUF: usize = 1024;
/// TCP receive buffer per connection.
pub const TCP_RX: usize = 1024;
/// TCP transmit buffer per connection (the page is larger: it streams).
pub const TCP_TX: usize = 1024;

/// The RAM the status page adds, as [`crate::SimConfig::ram`] lines.
pub fn ram() -> [(&'static str, usize); 2] {
    let state = std::mem::size_of::<Http<&mut [u8]>>();
    [
        ("http socket buffers", CONNECTIONS * (TCP_RX + TCP_TX)),
        (
            "http request buffers and state",
            CONNECTIONS * (REQUEST_BUF + state),
        ),
    ]
}

struct Slot {
    handle: SocketHandle,
    http: Http<Box<[u8]>>,
    /// When the socket is reset if still half-open or still closing.
    socket_deadline: Option<u64>,
    /// This connection's response was counted.
    counted: bool,
}

/// The HTTP listeners and their responders.
pub struct HttpServer {
    slots: Vec<Slot>,
    requests: u64,
    verbose: bool,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("connections", &self.slots.len())
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Add [`CONNECTIONS`] listening sockets on [`PORT`] to `sockets`.
    pub fn new(sockets: &mut SocketSet<'static>, verbose: bool) -> Self {
        let slots = (0..CONNECTIONS)
            .map(|_| {
                let mut s = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; TCP_RX]),
                    tcp::SocketBuffer::new(vec![0; TCP_TX]),
                );
                s.set_nagle_enabled(false);
                s.set_timeout(Some(Duration::from_secs(30)));
                let _ = s.listen(PORT);
                Slot {
                    handle: sockets.add(s),
                    http: Http::new(vec![0u8; REQUEST_BUF].into_boxed_slice(), Config::DEFAULT),
                    socket_deadline: None,
                    counted: false,
                }
            })
            .collect();
        HttpServer {
            slots,
            requests: 0,
            verbose,
        }
    }

    /// Requests answered since start (any status).
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The earliest deadline of any connection (monotonic ms).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.slots
            .iter()
            .flat_map(|s| [s.http.poll_timeout(), s.socket_deadline])
            .flatten()
            .min()
    }

    /// Serve every connection at `now_ms`; `open` is the number of tether
    /// connections open. Returns whether anything happened.
    pub fn serve(
        &mut self,
        sockets: &mut SocketSet<'_>,
        dev: &SimDev,
        ip: Ipv4Address,
        open: usize,
        now_ms: u64,
    ) -> bool {
        let mut worked = false;
        for i in 0..self.slots.len() {
            let sock = sockets.get_mut::<tcp::Socket<'_>>(self.slots[i].handle);
            if !self.manage(i, sock, now_ms) {
                continue;
            }
            let files = file_list(dev);
            let status = status(dev, &files, ip, open, self.requests, now_ms);
            worked |= self.exchange(i, sock, &status, now_ms);
        }
        worked
    }

    fn log(&self, i: usize, args: std::fmt::Arguments<'_>) {
        if self.verbose {
            eprintln!("[tether-sim] http {i}: {args}");
        }
    }

    /// Socket states around the responder: listen again after a close,
    /// accept, and reset a socket stuck half-open or closing. Returns whether
    /// the connection is open for the responder.
    fn manage(&mut self, i: usize, sock: &mut tcp::Socket<'_>, now_ms: u64) -> bool {
        use tcp::State as S;
        let slot = &mut self.slots[i];
        let limit = match sock.state() {
            S::Closed | S::TimeWait => {
                sock.abort();
                slot.http.handle_close();
                slot.socket_deadline = None;
                let _ = sock.listen(PORT);
                return false;
            }
            S::Listen => return false,
            S::Established | S::CloseWait => {
                slot.socket_deadline = None;
                if !slot.http.is_open() {
                    slot.http.handle_accept(now_ms);
                    slot.counted = false;
                    if let Some(peer) = sock.remote_endpoint() {
                        self.log(i, format_args!("connection from {peer}"));
                    }
                }
                return true;
            }
            S::SynSent | S::SynReceived => u64::from(Config::DEFAULT.request_timeout_ms),
            // Closing: what the peer still sends is read and dropped.
            _ => {
                while sock.can_recv() && sock.recv(|b| (b.len(), ())).is_ok() {}
                CLOSE_GRACE_MS
            }
        };
        let due = *slot.socket_deadline.get_or_insert(now_ms + limit);
        if now_ms >= due {
            sock.abort();
            self.log(i, format_args!("reset: half-open or close not completed"));
        }
        false
    }

    /// Move bytes between the socket and the responder, and close when it
    /// says so.
    fn exchange(
        &mut self,
        i: usize,
        sock: &mut tcp::Socket<'_>,
        status: &Status<'_>,
        now_ms: u64,
    ) -> bool {
        let slot = &mut self.slots[i];
        let http = &mut slot.http;
        let mut worked = false;
        http.handle_timeout(now_ms);
        while sock.can_recv() {
            let n = sock.recv(|b| {
                let n = http.handle_bytes(now_ms, b);
                (n, n)
            });
            worked |= n.unwrap_or(0) > 0;
        }
        if sock.state() == tcp::State::CloseWait {
            http.handle_eof(now_ms);
        }
        while sock.can_send() && http.wants_transmit() {
            let n = sock.send(|b| {
                let n = http.poll_transmit(b, status);
                (n, n)
            });
            if n.unwrap_or(0) == 0 {
                break;
            }
            worked = true;
        }
        let code = http.response_code();
        if code.is_some() && !slot.counted {
            slot.counted = true;
            self.requests += 1;
        }
        let Some(close) = self.slots[i].http.poll_close() else {
            return worked;
        };
        match close {
            Close::Graceful => sock.close(),
            Close::Reset => sock.abort(),
        }
        self.slots[i].http.handle_close();
        match code {
            Some(c) => self.log(i, format_args!("{} {}, {close:?}", c.number(), c.reason())),
            None => self.log(i, format_args!("no request, {close:?}")),
        }
        true
    }
}

/// The stored files, for an unkeyed device's page.
fn file_list(dev: &SimDev) -> Vec<FileInfo<'_>> {
    let mut v = Vec::new();
    dev.page_files(|f| v.push(f));
    v
}

/// What the page shows, from the device.
fn status<'a>(
    dev: &'a SimDev,
    files: &'a [FileInfo<'a>],
    ip: Ipv4Address,
    open: usize,
    requests: u64,
    now_ms: u64,
) -> Status<'a> {
    dev.page_status(files, Some(ip.octets()), open as u32, requests, now_ms)
}

//! The status page on TCP port 80 (issue 14): [`CONNS`] tasks, each
//! serving one connection at a time with the core's sans-IO
//! [`Http`] responder, the figures read from the device through
//! [`Shared::with_page`]. Read-only: it changes nothing, serves no file
//! contents and, on a keyed device, shows no file names.
//!
//! The responder bounds the request head by [`REQUEST_BUF`] (414, 431),
//! answers 408 to a request not complete within 10 s of the accept
//! (slowloris) and resets a connection whose response is not taken within
//! 10 s. Every byte received is read (what follows the first request's
//! head is dropped), so a client that keeps sending never stalls the
//! socket; after the response the connection closes, and what the peer
//! still sends is read and dropped for [`CLOSE_GRACE`] at most.

use core::sync::atomic::{AtomicU32, Ordering};

use embassy_futures::select::{select, select3};
use embassy_net::tcp::{State, TcpSocket};
use embassy_net::Stack;
use embassy_time::{Duration, Instant, Timer};
use tether_proto::http::{Close, Code, Config, Http};

use crate::link::{Gone, Link as _, TcpLink};
use crate::log;
use crate::serve::Shared;
use crate::time::now_ms;

/// The port the page is served on.
pub const PORT: u16 = 80;
/// HTTP connections served at once (a slowloris holds one for 10 s; the
/// other serves meanwhile).
pub const CONNS: usize = 2;
/// Request line and headers together, per connection.
pub const REQUEST_BUF: usize = 1024;
/// TCP receive and send buffers per connection (the page is larger than
/// the send buffer: it streams).
pub const SOCK_RX: usize = 1024;
pub const SOCK_TX: usize = 1024;
/// The responder's state per connection (without its buffer).
pub const STATE_BYTES: usize = core::mem::size_of::<Http<&'static mut [u8]>>();
/// A TCP connection silent this long is dropped by the stack.
const SOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// After the response: how long the peer may take to close its side.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How often a closing connection is looked at.
const CLOSE_POLL: Duration = Duration::from_millis(10);
/// Longest wait between two looks at a connection with nothing due.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Requests answered since boot (any status), shown on the page.
static REQUESTS: AtomicU32 = AtomicU32::new(0);

/// One connection's buffers.
pub struct HttpMem {
    request: [u8; REQUEST_BUF],
    rx: [u8; SOCK_RX],
    tx: [u8; SOCK_TX],
}

impl HttpMem {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        HttpMem {
            request: [0; REQUEST_BUF],
            rx: [0; SOCK_RX],
            tx: [0; SOCK_TX],
        }
    }
}

/// Serve the page on [`PORT`], one connection at a time, for ever; `ip` is
/// the device's address (shown on the page).
#[embassy_executor::task(pool_size = CONNS)]
pub async fn http_task(
    slot: usize,
    stack: Stack<'static>,
    sh: &'static Shared,
    ip: [u8; 4],
    mem: &'static mut HttpMem,
) {
    let HttpMem { request, rx, tx } = mem;
    let mut http = Http::new(&mut request[..], Config::DEFAULT);
    loop {
        let mut sock = TcpSocket::new(stack, rx, tx);
        sock.set_nagle_enabled(false);
        sock.set_timeout(Some(SOCK_TIMEOUT));
        if sock.accept(PORT).await.is_ok() {
            http.handle_accept(now_ms());
            let end = exchange(&mut sock, &mut http, sh, ip).await;
            http.handle_close();
            match end {
                Some((code, Close::Graceful)) => {
                    close_gracefully(&mut sock).await;
                    if let Some(c) = code {
                        log!("http {slot}: {} {}", c.number(), c.reason());
                    }
                }
                Some((code, Close::Reset)) => {
                    log!("http {slot}: reset ({})", code.map_or(0, Code::number));
                }
                None => log!("http {slot}: the peer left"),
            }
        }
        if !matches!(sock.state(), State::Closed | State::TimeWait) {
            sock.abort();
            let _ = embassy_time::with_timeout(Duration::from_millis(100), sock.flush()).await;
        }
    }
}

/// Move bytes between the socket and the responder until it says how to
/// close (`None`: the peer reset or left while the response was sent).
async fn exchange(
    sock: &mut TcpSocket<'_>,
    http: &mut Http<&mut [u8]>,
    sh: &Shared,
    ip: [u8; 4],
) -> Option<(Option<Code>, Close)> {
    let mut link = TcpLink(sock);
    let mut eof = false;
    let mut counted = false;
    loop {
        let now = now_ms();
        http.handle_timeout(now);
        // Everything received is taken: the head kept, the rest dropped.
        while !eof {
            match link.recv(|b| http.handle_bytes(now, b)).await {
                Ok((0, _)) => break,
                Ok(_) => {}
                Err(Gone) => {
                    eof = true;
                    http.handle_eof(now);
                }
            }
        }
        while http.wants_transmit() {
            let answered = u64::from(REQUESTS.load(Ordering::Relaxed));
            let sent = link
                .send(|b| sh.with_page(ip, answered, now, |st| http.poll_transmit(b, st)))
                .await;
            match sent {
                Ok(0) => break,
                Ok(_) => {}
                Err(Gone) => return None,
            }
        }
        if http.response_code().is_some() && !counted {
            counted = true;
            REQUESTS.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(close) = http.poll_close() {
            return Some((http.response_code(), close));
        }
        let idle = Instant::now() + IDLE_POLL;
        let due = http
            .poll_timeout()
            .map_or(idle, |ms| Instant::from_millis(ms).min(idle));
        let rx = async {
            if eof {
                core::future::pending().await
            } else {
                link.readable().await
            }
        };
        let tx = async {
            if http.wants_transmit() {
                link.writable().await
            } else {
                core::future::pending().await
            }
        };
        select3(rx, tx, Timer::at(due)).await;
    }
}

/// Send FIN after the response, read and drop what the peer still sends,
/// until both sides closed (or [`CLOSE_GRACE`] passed).
async fn close_gracefully(sock: &mut TcpSocket<'_>) {
    sock.close();
    let end = Instant::now() + CLOSE_GRACE;
    loop {
        while sock.can_recv() {
            let _ = sock.read_with(|b| (b.len(), ())).await;
        }
        if matches!(sock.state(), State::Closed | State::TimeWait) || Instant::now() >= end {
            return;
        }
        // The ACK of our FIN wakes no waker: look again shortly.
        let again = Timer::after(CLOSE_POLL);
        if sock.may_recv() {
            select(sock.wait_read_ready(), again).await;
        } else {
            again.await;
        }
    }
}

//! Byte-stream links and the loop that serves one connection over any of
//! them. A [`Link`] is a TCP connection (embassy-net) or the raw UART; a
//! serial framing layer (COBS, say) will be one more `Link` wrapping the
//! UART, and nothing else changes.

use core::future::{poll_fn, Future};
use core::pin::pin;
use core::task::Poll;

use embassy_futures::select::{select3, Either3};
use embassy_net::tcp::TcpSocket;
use embassy_time::{Duration, Instant, Timer};

use crate::serve::{Conn, Shared};
use crate::time::now_ms;

/// The other end has gone: nothing more can be read or sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// A byte stream to one peer.
pub trait Link {
    /// Offer received bytes to `f`, which returns how many it took.
    /// Returns `(taken, offered)`; `(0, 0)` when nothing waits; `Err` when
    /// the peer closed its sending side and everything was read.
    async fn recv(&mut self, f: impl FnOnce(&[u8]) -> usize) -> Result<(usize, usize), Gone>;
    /// Let `f` write into the free send space; returns how many bytes it wrote.
    async fn send(&mut self, f: impl FnOnce(&mut [u8]) -> usize) -> Result<usize, Gone>;
    /// Wait until bytes wait to be received, or the peer is gone.
    fn readable(&self) -> impl Future<Output = ()>;
    /// Wait until there is room to send, or the peer is gone.
    fn writable(&self) -> impl Future<Output = ()>;
}

/// Longest wait between two looks at a connection with nothing due.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Serve the open `conn` over `link` until the session or the peer ends it,
/// then close it. Returns when the connection is over.
pub async fn serve<L: Link>(link: &mut L, conn: &mut Conn, sh: &Shared) {
    let mut peer_gone = false;
    loop {
        let now = now_ms();
        conn.tick(sh, now);
        // Move bytes both ways until neither side makes progress. After a
        // reboot request nothing more is read: what is queued is flushed.
        let mut rx_stuck = false;
        loop {
            let mut moved = false;
            if !peer_gone && !sh.reboot_pending() {
                match link.recv(|b| conn.feed(sh, b, now)).await {
                    Ok((taken, offered)) => {
                        moved |= taken > 0;
                        rx_stuck = taken < offered;
                    }
                    Err(Gone) => peer_gone = true,
                }
            }
            if conn.wants_transmit() {
                match link.send(|b| conn.emit(sh, b, now)).await {
                    Ok(n) => moved |= n > 0,
                    Err(Gone) => {
                        conn.close(sh);
                        return;
                    }
                }
            }
            crate::board_events(sh);
            if !moved {
                break;
            }
        }
        let flushed = !conn.wants_transmit();
        if conn.should_close() || (flushed && (peer_gone || sh.reboot_pending())) {
            conn.close(sh);
            return;
        }
        let due = conn
            .deadline()
            .map(Instant::from_millis)
            .unwrap_or(Instant::now() + IDLE_POLL)
            .min(Instant::now() + IDLE_POLL);
        let want_rx = !peer_gone && !rx_stuck && !sh.reboot_pending();
        let rx = async {
            if want_rx {
                link.readable().await
            } else {
                core::future::pending().await
            }
        };
        let tx = async {
            if conn.wants_transmit() {
                link.writable().await
            } else {
                core::future::pending().await
            }
        };
        match select3(rx, tx, Timer::at(due)).await {
            Either3::First(()) | Either3::Second(()) | Either3::Third(()) => {}
        }
    }
}

/// A TCP connection as a [`Link`].
pub struct TcpLink<'s, 'a>(pub &'s mut TcpSocket<'a>);

impl Link for TcpLink<'_, '_> {
    async fn recv(&mut self, f: impl FnOnce(&[u8]) -> usize) -> Result<(usize, usize), Gone> {
        if !self.0.can_recv() {
            return if self.0.may_recv() {
                Ok((0, 0))
            } else {
                Err(Gone)
            };
        }
        // Data is buffered, so this does not wait.
        self.0
            .read_with(|b| {
                let n = f(b).min(b.len());
                (n, (n, b.len()))
            })
            .await
            .map_err(|_| Gone)
    }

    async fn send(&mut self, f: impl FnOnce(&mut [u8]) -> usize) -> Result<usize, Gone> {
        if !self.0.may_send() {
            return Err(Gone);
        }
        if !self.0.can_send() {
            return Ok(0);
        }
        self.0
            .write_with(|b| {
                let n = f(b).min(b.len());
                (n, n)
            })
            .await
            .map_err(|_| Gone)
    }

    fn readable(&self) -> impl Future<Output = ()> {
        let s = &*self.0;
        poll_fn(move |cx| {
            if s.can_recv() || !s.may_recv() {
                return Poll::Ready(());
            }
            // A state change (FIN, reset) also wakes the receive waker.
            pin!(s.wait_read_ready()).poll(cx)
        })
    }

    fn writable(&self) -> impl Future<Output = ()> {
        let s = &*self.0;
        poll_fn(move |cx| {
            if s.can_send() || !s.may_send() {
                return Poll::Ready(());
            }
            pin!(s.wait_write_ready()).poll(cx)
        })
    }
}

/// UART0 carrying raw tether frames as a [`Link`] (no serial framing yet:
/// a framing layer wraps this). A serial line never closes.
pub struct UartLink {
    buf: [u8; 256],
    start: usize,
    end: usize,
}

impl UartLink {
    /// The link over UART0 (set up by `uart::init_link`).
    pub const fn new() -> Self {
        UartLink {
            buf: [0; 256],
            start: 0,
            end: 0,
        }
    }

    /// Whether received bytes wait (in this link or the UART's pipe).
    pub fn has_input(&self) -> bool {
        self.start < self.end || crate::uart::readable()
    }
}

impl Link for UartLink {
    async fn recv(&mut self, f: impl FnOnce(&[u8]) -> usize) -> Result<(usize, usize), Gone> {
        if self.start == self.end {
            self.start = 0;
            self.end = crate::uart::try_read(&mut self.buf);
        }
        let offered = self.end - self.start;
        if offered == 0 {
            return Ok((0, 0));
        }
        let n = f(&self.buf[self.start..self.end]).min(offered);
        self.start += n;
        Ok((n, offered))
    }

    async fn send(&mut self, f: impl FnOnce(&mut [u8]) -> usize) -> Result<usize, Gone> {
        let mut out = [0u8; 256];
        let room = crate::uart::write_room().min(out.len());
        if room == 0 {
            return Ok(0);
        }
        let n = f(&mut out[..room]).min(room);
        let queued = crate::uart::try_write(&out[..n]);
        debug_assert_eq!(queued, n, "room was checked; only this task writes");
        Ok(n)
    }

    fn readable(&self) -> impl Future<Output = ()> {
        let buffered = self.start < self.end;
        async move {
            if !buffered {
                crate::uart::wait_readable().await
            }
        }
    }

    fn writable(&self) -> impl Future<Output = ()> {
        crate::uart::wait_writable()
    }
}

//! The device's figures for the status page ([`crate::http`]): what a
//! firmware serving the page passes to [`Http::poll_transmit`](crate::http::Http::poll_transmit),
//! filled the same way on every board.

use super::{Clock, Commands, Device, Store};
use crate::http::{Counters, FileInfo, Security, Status, StoreUse};

impl<S: Store, C: Clock, K: Commands> Device<S, C, K> {
    /// The stored files as the page lists them, each to `f` in the store's
    /// order; none at all on a keyed device (its page shows no names, only
    /// counts and sizes).
    pub fn page_files<'a>(&'a self, mut f: impl FnMut(FileInfo<'a>)) {
        if self.config.key.is_some() {
            return;
        }
        let mut at = None;
        while let Some(id) = self.store.next(at) {
            if let Some(m) = self.store.meta(id) {
                f(FileInfo {
                    name: m.name,
                    size: m.size,
                });
            }
            at = Some(id);
        }
    }

    /// What the page shows at `now_ms`: the device's agent, uptime, clock,
    /// store use, counters, LED and key, with the firmware's own figures:
    /// `files` (from [`page_files`](Self::page_files)), its address, the
    /// protocol connections open now and the HTTP requests answered.
    pub fn page_status<'a>(
        &'a self,
        files: &'a [FileInfo<'a>],
        ip: Option<[u8; 4]>,
        open: u32,
        http_requests: u64,
        now_ms: u64,
    ) -> Status<'a> {
        let (st, u) = (self.stats, self.store.usage());
        Status {
            agent: self.config.agent,
            uptime_ms: self.uptime_ms(now_ms),
            unix_ms: self.clock.unix_ms(now_ms),
            ip,
            led: self.led,
            keyed: self.config.key.is_some(),
            store: StoreUse {
                used: u.used,
                capacity: u.capacity,
                files: u.files,
                pending: u.pending,
                max_files: u.max_files,
            },
            counters: Counters {
                connections: st.connections,
                open,
                datagrams: st.datagrams,
                frames_in: st.frames_in,
                frames_out: st.frames_out,
                bytes_in: st.bytes_in,
                bytes_out: st.bytes_out,
                errors_sent: st.errors_sent,
                http_requests,
            },
            security: Security {
                auth_failures: st.auth_failures,
                backoff_refusals: st.backoff_refusals,
                integrity_failures: st.integrity_failures,
                bad_frames: st.bad_frames,
                timeouts: st.timeouts,
            },
            files,
        }
    }
}

//! Noticing a server that is gone. A client waiting for data sends
//! nothing, so over TCP it would never learn that the peer rebooted or
//! vanished. With requests in flight and no byte moving either way for
//! [`keepalive_ms`](super::ClientConfig::keepalive_ms), the client sends a
//! Ping with request id 0 (a reset answers it at once if the peer is gone);
//! any byte received clears it, and none within
//! [`stall_timeout_ms`](super::ClientConfig::stall_timeout_ms) of it closes
//! the connection ([`ConnError::Stalled`](super::ConnError::Stalled)).

/// When bytes last moved, and the probe in flight.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Liveness {
    last_rx: u64,
    last_tx: u64,
    /// When the probe Ping was queued (none: no probe in flight).
    probe: Option<u64>,
}

/// What [`Liveness::due`] says is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Send a probe Ping.
    Probe,
    /// Nothing came back in time: the server is gone.
    Stalled,
}

impl Liveness {
    /// Bytes arrived at `now`.
    pub fn received(&mut self, now: u64) {
        self.last_rx = self.last_rx.max(now);
        self.probe = None;
    }

    /// Bytes left at `now`.
    pub fn sent(&mut self, now: u64) {
        self.last_tx = self.last_tx.max(now);
    }

    /// The probe was queued at `now`.
    pub fn probing(&mut self, now: u64) {
        self.probe = Some(now);
    }

    /// The next deadline and what it is for (`0` disables either).
    pub fn next(&self, keepalive_ms: u32, stall_ms: u32) -> Option<(u64, Due)> {
        let (keepalive, stall) = (u64::from(keepalive_ms), u64::from(stall_ms));
        let quiet_since = self.last_rx.max(self.last_tx);
        match self.probe {
            Some(at) if stall > 0 => Some((at.saturating_add(stall), Due::Stalled)),
            Some(_) => None,
            None if keepalive > 0 => Some((quiet_since.saturating_add(keepalive), Due::Probe)),
            None if stall > 0 => Some((quiet_since.saturating_add(stall), Due::Stalled)),
            None => None,
        }
    }

    /// What is due at `now`, if anything.
    pub fn due(&self, now: u64, keepalive_ms: u32, stall_ms: u32) -> Option<Due> {
        self.next(keepalive_ms, stall_ms)
            .filter(|(at, _)| now >= *at)
            .map(|(_, d)| d)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_probe_after_quiet_then_stalled_unless_bytes_arrive() {
        let mut l = Liveness::default();
        l.sent(1_000);
        assert_eq!(l.next(5_000, 20_000), Some((6_000, Due::Probe)));
        assert_eq!(l.due(5_999, 5_000, 20_000), None);
        assert_eq!(l.due(6_000, 5_000, 20_000), Some(Due::Probe));
        l.probing(6_000);
        // Sending (the probe itself, or upload data) does not clear it.
        l.sent(6_001);
        assert_eq!(l.next(5_000, 20_000), Some((26_000, Due::Stalled)));
        assert_eq!(l.due(26_000, 5_000, 20_000), Some(Due::Stalled));
        // Any byte back does.
        l.received(25_000);
        assert_eq!(l.next(5_000, 20_000), Some((30_000, Due::Probe)));
        // Disabled.
        assert_eq!(l.next(0, 0), None);
        assert_eq!(l.next(0, 7_000), Some((32_000, Due::Stalled)));
    }
}

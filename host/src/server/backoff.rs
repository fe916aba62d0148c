//! Back-off after failed authentication, per peer address.
//!
//! A peer whose Auth proofs fail [`THRESHOLD`] times, each within
//! [`WINDOW`] of the one before, is refused (BUSY, at connect) for
//! [`BASE`], doubling with every further failure up to [`MAX`]. A
//! successful authentication forgets the peer. The table holds at most
//! [`CAPACITY`] peers: expired entries go first, then the oldest, so its
//! memory is bounded whatever the number of addresses an attacker has
//! (an attacker with more addresses than that can make the server forget
//! some of them: the back-off slows guessing down, the 256-bit key is what
//! makes it hopeless).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures (each within [`WINDOW`] of the previous) before a peer is refused.
pub const THRESHOLD: u32 = 3;
/// Failures further apart than this start counting again.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The first refusal period; it doubles with each further failure.
pub const BASE: Duration = Duration::from_secs(10);
/// The longest refusal period.
pub const MAX: Duration = Duration::from_secs(15 * 60);
/// Most peers remembered.
pub const CAPACITY: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Entry {
    fails: u32,
    last: Instant,
    until: Option<Instant>,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        let quiet = now.saturating_duration_since(self.last) > WINDOW;
        let free = self.until.is_none_or(|u| now >= u);
        quiet && free
    }
}

/// The failure table.
#[derive(Debug, Default)]
pub struct Backoff {
    peers: Mutex<HashMap<IpAddr, Entry>>,
}

impl Backoff {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long `ip` is still refused, if it is.
    pub fn refused(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let g = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let until = g.get(&ip)?.until?;
        (until > now).then(|| until - now)
    }

    /// Record a failed authentication; returns the refusal period it
    /// starts, if any.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut g = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if !g.contains_key(&ip) && g.len() >= CAPACITY {
            g.retain(|_, e| !e.expired(now));
            if g.len() >= CAPACITY {
                if let Some(oldest) = g.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| *k) {
                    g.remove(&oldest);
                }
            }
        }
        let e = g.entry(ip).or_insert(Entry {
            fails: 0,
            last: now,
            until: None,
        });
        if e.fails > 0 && e.expired(now) {
            e.fails = 0;
            e.until = None;
        }
        e.fails += 1;
        e.last = now;
        if e.fails < THRESHOLD {
            return None;
        }
        let doublings = (e.fails - THRESHOLD).min(16);
        let period = BASE.saturating_mul(1 << doublings).min(MAX);
        e.until = Some(now + period);
        Some(period)
    }

    /// A successful authentication: forget the peer.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut g = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        g.remove(&ip);
    }

    /// Peers remembered.
    pub fn len(&self) -> usize {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_threshold_doubling_and_forgets() {
        let b = Backoff::new();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(b.failed(ip, t0), None);
        assert_eq!(b.failed(ip, t0 + Duration::from_secs(1)), None);
        assert_eq!(b.refused(ip, t0 + Duration::from_secs(1)), None);
        let t = t0 + Duration::from_secs(2);
        assert_eq!(b.failed(ip, t), Some(BASE));
        assert_eq!(b.refused(ip, t), Some(BASE));
        assert_eq!(b.refused(other, t), None, "other peers are not affected");
        assert_eq!(b.failed(ip, t), Some(BASE * 2));
        assert_eq!(b.failed(ip, t), Some(BASE * 4));
        assert_eq!(b.refused(ip, t + BASE * 4), None, "the period ends");
        for _ in 0..40 {
            b.failed(ip, t);
        }
        assert_eq!(b.refused(ip, t), Some(MAX));
        b.succeeded(ip);
        assert_eq!(b.refused(ip, t), None);
        // Failures far apart never add up.
        let mut t = t0;
        for _ in 0..10 {
            t += WINDOW + Duration::from_secs(1);
            assert_eq!(b.failed(other, t), None);
        }
    }

    #[test]
    fn the_table_is_bounded() {
        let b = Backoff::new();
        let t = Instant::now();
        for i in 0..(CAPACITY as u32 + 100) {
            b.failed(IpAddr::from(i.to_be_bytes()), t);
        }
        assert_eq!(b.len(), CAPACITY);
    }
}
